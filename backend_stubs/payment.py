"""The payment service: authorizes cards for new orders, refunds cancelled ones.

It is the saga's entry point. `place_order` is called by the storefront API
(POST /api/orders) and answers only once the bus has acknowledged the
`payment.authorized` / `payment.declined` event, so a 202 always means the
order is on its way. As a consumer of `orders` it refunds an authorized
payment when its order is cancelled.

An order is recorded, with its answer and its event, *before* the event is
published, under its Idempotency-Key: a retry of a request whose publish
failed, timed out, or was acknowledged just before a crash publishes that
same event again (same event id, same order id), which every consumer
drops as a repeat, instead of deciding a second order. The wait for the
bus's acknowledgement is bounded (`ack_timeout_s`): with the broker away,
the API answers 503 at once instead of hanging.

Fault trigger (docs/protocol.md): card 4000000000000002 is always declined.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from backend_stubs.runner import follow_up, outgoing
from backend_stubs.store import Store, decode_headers, encode_headers
from orderpush_core.bus.base import BusError, EventBus, OutgoingRecord
from orderpush_core.events import Event, make_event
from orderpush_core.tracing import child_traceparent

DECLINED_CARD: Final = "4000000000000002"
CURRENCY: Final = "EUR"
#: How long a request waits for the bus to acknowledge its event before it
#: answers 503 (the API's answer must come within 2 s, whatever Kafka does).
ACK_TIMEOUT_S: Final = 1.5

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS payments (
    order_id     TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,  -- authorized | declined | refunded
    amount_cents INTEGER NOT NULL,
    card_last4   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    user_id     TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
-- The event of a recorded order until the bus acknowledged it: a retry
-- with the same key publishes exactly this record again.
CREATE TABLE IF NOT EXISTS unacknowledged (
    user_id TEXT NOT NULL,
    key     TEXT NOT NULL,
    topic   TEXT NOT NULL,
    rkey    TEXT NOT NULL,
    value   BLOB NOT NULL,
    headers TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
"""


@dataclass(frozen=True, slots=True)
class LineItem:
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated POST /api/orders body."""

    items: tuple[LineItem, ...]
    card: str

    def fingerprint(self) -> str:
        """Identifies the request, so a reused Idempotency-Key with another
        body is told apart from a genuine retry."""
        canonical = json.dumps([[[i.sku, i.qty] for i in self.items], self.card])
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API answers: an HTTP status and a JSON body."""

    status_code: int
    body: dict[str, Any]
    #: True when this is the stored first answer to an earlier request.
    replayed: bool = False


def unit_price_cents(sku: str) -> int:
    """A stable made-up price per SKU (there is no catalogue in the stubs)."""
    return 100 * (1 + zlib.crc32(sku.encode()) % 50)


def new_order_id() -> str:
    return f"ord_{secrets.token_hex(8)}"


class PaymentService:
    name: Final = "payment"
    topics: Final = ("orders",)

    def __init__(
        self, store: Store, bus: EventBus, *, ack_timeout_s: float = ACK_TIMEOUT_S
    ) -> None:
        self.store = store
        self.bus = bus
        self.ack_timeout_s = ack_timeout_s
        # Publishes that outlived their request's wait (the broker may still
        # take them): kept referenced until they end.
        self._late: set[asyncio.Task[None]] = set()
        store.migrate(_SCHEMA)
        # Serializes retries of one (user, Idempotency-Key) inside this
        # process, so two concurrent retries cannot both create an order.
        self._key_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._key_users: dict[tuple[str, str], int] = {}

    # -- HTTP side -----------------------------------------------------------

    async def place_order(
        self,
        user_id: str,
        request: OrderRequest,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> Answer:
        """Authorize the payment and emit the event that starts the saga.

        Raises BusError when the bus does not acknowledge the event within
        `ack_timeout_s`. With a key, the order is recorded already: a retry
        with that key publishes the same event again and answers as the
        first attempt would have. Without a key a retry is a new order, and
        the event of a failed attempt may still land later.
        """
        if idempotency_key is None:
            answer, record = self._decide(user_id, request, None, traceparent)
            await self._publish(record)
            return answer
        slot = (user_id, idempotency_key)
        lock = self._key_locks.setdefault(slot, asyncio.Lock())
        self._key_users[slot] = self._key_users.get(slot, 0) + 1
        try:
            async with lock:
                row = self.store.conn.execute(
                    "SELECT fingerprint, status_code, body FROM idempotency"
                    " WHERE user_id = ? AND key = ?",
                    slot,
                ).fetchone()
                if row is None:
                    answer, record = self._decide(user_id, request, idempotency_key, traceparent)
                    await self._publish(record)
                    self._acknowledged(slot)
                    return answer
                if row["fingerprint"] != request.fingerprint():
                    return Answer(
                        409,
                        {
                            "error": "idempotency_key_reused",
                            "message": "this Idempotency-Key was used with another body",
                        },
                    )
                answer = Answer(row["status_code"], json.loads(row["body"]), replayed=True)
                pending = self._unacknowledged(slot)
                if pending is not None:
                    # An earlier attempt recorded the order but never saw its
                    # event acknowledged: send that very event again.
                    await self._publish(pending)
                    self._acknowledged(slot)
                return answer
        finally:
            self._key_users[slot] -= 1
            if not self._key_users[slot]:
                del self._key_users[slot], self._key_locks[slot]

    async def _publish(self, record: OutgoingRecord) -> None:
        """Publish, waiting at most `ack_timeout_s` for the acknowledgement.
        A publish that takes longer goes on in the background (aiokafka may
        still deliver it); the caller's retry sends the same event again."""
        task = asyncio.create_task(self.bus.publish([record]), name="payment-publish")
        done, _ = await asyncio.wait({task}, timeout=self.ack_timeout_s)
        if task in done:
            task.result()  # raises the BusError of a refused publish
            return
        self._late.add(task)
        task.add_done_callback(_forget_late(self._late))
        raise BusError(f"the bus did not acknowledge within {self.ack_timeout_s:.1f}s")

    def _unacknowledged(self, slot: tuple[str, str]) -> OutgoingRecord | None:
        row = self.store.conn.execute(
            "SELECT topic, rkey, value, headers FROM unacknowledged WHERE user_id = ? AND key = ?",
            slot,
        ).fetchone()
        if row is None:
            return None
        return OutgoingRecord(
            row["topic"], row["rkey"], bytes(row["value"]), decode_headers(row["headers"])
        )

    def _acknowledged(self, slot: tuple[str, str]) -> None:
        self.store.conn.execute("DELETE FROM unacknowledged WHERE user_id = ? AND key = ?", slot)

    def _decide(
        self,
        user_id: str,
        request: OrderRequest,
        idempotency_key: str | None,
        traceparent: str | None,
    ) -> tuple[Answer, OutgoingRecord]:
        """Authorize (or decline) a new order and record it, with its answer
        and, under a key, its event until the bus acknowledges it."""
        order_id = new_order_id()
        items = [{"sku": i.sku, "qty": i.qty} for i in request.items]
        amount_cents = sum(unit_price_cents(i.sku) * i.qty for i in request.items)
        last4 = request.card[-4:]
        declined = request.card == DECLINED_CARD
        data: dict[str, Any] = {
            "items": items,
            "amount_cents": amount_cents,
            "currency": CURRENCY,
            "card_last4": last4,
        }
        if declined:
            data["reason"] = "card_declined"
            event = make_event("payment.declined", order_id=order_id, user_id=user_id, data=data)
            answer = Answer(402, {"error": "payment_declined", "order_id": order_id})
        else:
            event = make_event("payment.authorized", order_id=order_id, user_id=user_id, data=data)
            answer = Answer(202, {"order_id": order_id, "status": "pending"})
        record = outgoing(event, traceparent=child_traceparent(traceparent))
        # Recorded before the publish, so this process's own `order.cancelled`
        # handler finds the payment whenever the saga gets there.
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO payments (order_id, user_id, status, amount_cents, card_last4)"
                " VALUES (?, ?, ?, ?, ?)",
                (order_id, user_id, event.type.split(".")[1], amount_cents, last4),
            )
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO idempotency (user_id, key, fingerprint, status_code, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        user_id,
                        idempotency_key,
                        request.fingerprint(),
                        answer.status_code,
                        json.dumps(answer.body),
                    ),
                )
                conn.execute(
                    "INSERT INTO unacknowledged (user_id, key, topic, rkey, value, headers)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        user_id,
                        idempotency_key,
                        record.topic,
                        record.key,
                        record.value,
                        encode_headers(record.headers),
                    ),
                )
        return answer, record

    # -- consumer side -------------------------------------------------------

    def handle(self, event: Event) -> list[Event]:
        if event.type != "order.cancelled":
            return []
        row = self.store.conn.execute(
            "SELECT status, amount_cents FROM payments WHERE order_id = ?", (event.order_id,)
        ).fetchone()
        # Only an authorized payment has money to give back; a declined one
        # (the usual reason for an order.cancelled v1) has none.
        if row is None or row["status"] != "authorized":
            return []
        self.store.conn.execute(
            "UPDATE payments SET status = 'refunded' WHERE order_id = ?", (event.order_id,)
        )
        return [
            follow_up(
                event,
                "payment.refunded",
                data={
                    "amount_cents": row["amount_cents"],
                    "currency": CURRENCY,
                    "reason": event.data.get("reason", "order_cancelled"),
                },
            )
        ]

    def payment_status(self, order_id: str) -> str | None:
        row = self.store.conn.execute(
            "SELECT status FROM payments WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if row is None else str(row["status"])


def _forget_late(late: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def forget(task: asyncio.Task[None]) -> None:
        late.discard(task)
        if not task.cancelled():
            # Retrieved so asyncio does not report it: a late failure is
            # expected while the broker is away, and the request got its 503.
            task.exception()

    return forget
