"""The payment service: authorizes cards for new orders, refunds cancelled ones.

It is the saga's entry point. `place_order` is called by the storefront API
(POST /api/orders) and answers only once the bus has acknowledged the
`payment.authorized` / `payment.declined` event, so a 202 always means the
order is on its way. As a consumer of `orders` it refunds an authorized
payment when its order is cancelled.

Fault trigger (PROTOCOL.md): card 4000000000000002 is always declined.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import zlib
from dataclasses import dataclass
from typing import Any, Final

from backend_stubs.runner import follow_up, outgoing
from backend_stubs.store import Store
from backend_stubs.tracing import child_traceparent
from gateway.bus.base import EventBus
from gateway.events import Event, make_event

DECLINED_CARD: Final = "4000000000000002"
CURRENCY: Final = "EUR"

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

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
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

        Raises BusError when the bus does not acknowledge the event; nothing
        is recorded then, so a retry (with the same key) places the order.
        """
        if idempotency_key is None:
            return await self._authorize(user_id, request, None, traceparent)
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
                if row is not None:
                    if row["fingerprint"] != request.fingerprint():
                        return Answer(
                            409,
                            {
                                "error": "idempotency_key_reused",
                                "message": "this Idempotency-Key was used with another body",
                            },
                        )
                    return Answer(row["status_code"], json.loads(row["body"]), replayed=True)
                return await self._authorize(user_id, request, idempotency_key, traceparent)
        finally:
            self._key_users[slot] -= 1
            if not self._key_users[slot]:
                del self._key_users[slot], self._key_locks[slot]

    async def _authorize(
        self,
        user_id: str,
        request: OrderRequest,
        idempotency_key: str | None,
        traceparent: str | None,
    ) -> Answer:
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

        await self.bus.publish([outgoing(event, traceparent=child_traceparent(traceparent))])
        # Recorded only after the bus acknowledged the event: a failed publish
        # leaves no trace, so the client's retry places the order. No await
        # lies between the ack and this commit, so this process's own
        # `order.cancelled` handler cannot look for the payment before it is
        # here.
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
        return answer

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
