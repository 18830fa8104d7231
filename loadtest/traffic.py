"""The traffic of a run: order events produced to the bus, or orders placed
through the storefront API. Each sender registers with the ledger what every
connection of the user must receive.

Events are interleaved across users (round r sends each user's r-th event),
so every user's events spread over the whole run, and the events of one
order are produced in version order on its key, hence on one partition.
With `duration_s` > 0 the sends are spread evenly over that time; otherwise
they go as fast as the bus (or the API) acknowledges them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from loadtest.config import STATUS_LADDER
from loadtest.ledger import Key, Ledger
from loadtest.report import TrafficStats
from orderpush_core.auth import issue_token
from orderpush_core.bus import BusError, EventBus, OutgoingRecord
from orderpush_core.events import encode_event, make_event

BATCH_MAX: Final = 500
PACE_TICK_S: Final = 0.01
ORDER_BODY: Final = {
    "items": [{"sku": "SKU-LOADTEST", "qty": 1}],
    "payment": {"card": "4242424242424242"},
}


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    user_id: str
    order_id: str
    version: int

    @property
    def status(self) -> str:
        return STATUS_LADDER[self.version - 1]

    @property
    def key(self) -> Key:
        return (self.order_id, self.version)


class BusPlan:
    """Which event is the k-th to send; computed, never stored."""

    def __init__(self, user_ids: Sequence[str], events_per_user: int, versions: int) -> None:
        self.user_ids = list(user_ids)
        self.events_per_user = events_per_user
        self.versions = versions

    def __len__(self) -> int:
        return len(self.user_ids) * self.events_per_user

    def __getitem__(self, k: int) -> PlannedEvent:
        round_, u = divmod(k, len(self.user_ids))
        order_no, step = divmod(round_, self.versions)
        user_id = self.user_ids[u]
        return PlannedEvent(user_id, f"{user_id}-o{order_no}", step + 1)

    def keys_of(self, u: int) -> list[Key]:
        user_id = self.user_ids[u]
        return [
            (f"{user_id}-o{r // self.versions}", r % self.versions + 1)
            for r in range(self.events_per_user)
        ]


def _due(sent: int, total: int, started: float, duration_s: float) -> int:
    """How many of `total` sends are due by now, spread over `duration_s`."""
    if duration_s <= 0:
        return total
    elapsed = time.perf_counter() - started
    return min(total, max(sent, int(elapsed / duration_s * total) + 1))


async def _wait_for_due(sent: int, total: int, started: float, duration_s: float) -> None:
    if duration_s > 0:
        next_at = started + sent / total * duration_s
        delay = next_at - time.perf_counter()
        await asyncio.sleep(max(delay, PACE_TICK_S if delay > 0 else 0))


async def send_to_bus(
    bus: EventBus,
    plan: BusPlan,
    ledger: Ledger,
    stats: TrafficStats,
    *,
    run_id: str,
    duration_s: float = 0.0,
    topic: str = "orders",
) -> None:
    """Produce the plan's order events, each stamped with its send time."""
    for u, user_id in enumerate(plan.user_ids):
        ledger.expect_many(user_id, plan.keys_of(u))
    total = len(plan)
    started = time.perf_counter()
    sent = 0
    try:
        while sent < total:
            due = _due(sent, total, started, duration_s)
            if due <= sent:
                await _wait_for_due(sent, total, started, duration_s)
                continue
            batch: list[OutgoingRecord] = []
            for k in range(sent, min(due, sent + BATCH_MAX)):
                planned = plan[k]
                sent_ns = time.time_ns()
                event = make_event(
                    f"order.{planned.status}",
                    order_id=planned.order_id,
                    user_id=planned.user_id,
                    status=planned.status,
                    version=planned.version,
                    data={"loadtest_sent_ns": sent_ns, "loadtest_run": run_id},
                )
                batch.append(OutgoingRecord(topic, planned.order_id, encode_event(event)))
                if stats.first_send_ns is None:
                    stats.first_send_ns = sent_ns
            await bus.publish(batch)
            sent += len(batch)
            stats.events_sent = sent
            stats.last_send_ns = time.time_ns()
    except BusError as exc:
        stats.error = f"--bus: {exc}"


async def place_orders(
    http: httpx.AsyncClient,
    user_ids: Sequence[str],
    orders_per_user: int,
    ledger: Ledger,
    stats: TrafficStats,
    *,
    secret: str,
    token_ttl_s: float,
    audience: str | None = None,
    issuer: str | None = None,
    duration_s: float = 0.0,
    concurrency: int = 32,
) -> None:
    """Place orders with POST /api/orders; each must reach the user's
    connections as order.pending (v1) and order.confirmed (v2)."""
    tokens = {
        user: issue_token(user, secret, ttl_s=token_ttl_s, audience=audience, issuer=issuer)
        for user in user_ids
    }
    total = len(user_ids) * orders_per_user
    queue: asyncio.Queue[str] = asyncio.Queue()
    started = time.perf_counter()
    stop = asyncio.Event()

    async def feeder() -> None:
        sent = 0
        while sent < total:
            due = _due(sent, total, started, duration_s)
            while sent < due:
                await queue.put(user_ids[sent % len(user_ids)])
                sent += 1
            if sent < total:
                await _wait_for_due(sent, total, started, duration_s)
        stop.set()

    async def worker() -> None:
        while True:
            if stop.is_set() and queue.empty():
                return
            try:
                user = await asyncio.wait_for(queue.get(), 0.1)
            except TimeoutError:
                continue
            await _place_one(http, user, tokens[user], ledger, stats)

    await asyncio.gather(feeder(), *(worker() for _ in range(min(concurrency, total))))


async def _place_one(
    http: httpx.AsyncClient, user: str, token: str, ledger: Ledger, stats: TrafficStats
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    post_ns = time.time_ns()
    if stats.first_send_ns is None:
        stats.first_send_ns = post_ns
    response: httpx.Response | None = None
    error = ""
    for _attempt in range(2):  # one retry on a transport error; the key makes it safe
        try:
            response = await http.post("/api/orders", json=ORDER_BODY, headers=headers)
            break
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}"
    stats.last_send_ns = time.time_ns()
    if response is None:
        stats.api_errors[error] += 1
        stats.first_api_error = stats.first_api_error or f"POST /api/orders: {error}"
        return
    order_id: object = None
    if response.status_code == 202:
        try:
            order_id = response.json().get("order_id")
        except ValueError:
            order_id = None
    if not isinstance(order_id, str) or not order_id:
        stats.api_errors[f"http {response.status_code}"] += 1
        stats.first_api_error = stats.first_api_error or (
            f"POST /api/orders: {response.status_code} {response.text[:200]}"
        )
        return
    stats.orders_placed += 1
    # Latency is measured from the POST to order.confirmed (the status the
    # user waits for), not to the pending that precedes it.
    ledger.expect(user, (order_id, 1))
    ledger.expect(user, (order_id, 2), post_ns)
