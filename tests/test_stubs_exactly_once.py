"""Exactly-once across redelivery, and a consume loop that never dies.

Each service records the inputs it handled and what they produced; a
redelivered input gets the recorded outputs again (same event ids), never
a new decision.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from backend_stubs.billing import BillingService
from backend_stubs.delivery import DeliveryService
from backend_stubs.inventory import InventoryService
from backend_stubs.order import OrderService
from backend_stubs.payment import PaymentService
from backend_stubs.runner import Service, ServiceRunner, derived_event_id
from backend_stubs.stack import StubStack
from backend_stubs.store import Store
from orderpush_core.bus import (
    BusError,
    Consumer,
    EventBus,
    OutgoingRecord,
    Record,
    TopicPartition,
    open_bus,
)
from orderpush_core.events import Event, encode_event, make_event
from orderpush_core.failures import POISON_ATTEMPTS
from tests.backends import BUS_BACKENDS, bus_url, unique
from tests.stubs_support import decoded, eventually, open_shop, order_body, read_topic

ITEMS = [{"sku": "SKU-1", "qty": 2}]


def record_of(event: Event, topic: str, offset: int = 0) -> Record:
    return Record(topic, 0, offset, event.order_id, encode_event(event), 0)


def authorized(order_id: str = "ord_1") -> Event:
    return make_event(
        "payment.authorized",
        order_id=order_id,
        user_id="alice",
        data={"items": ITEMS, "amount_cents": 500, "currency": "EUR", "card_last4": "4242"},
    )


def pending(order_id: str = "ord_1") -> Event:
    return make_event(
        "order.pending",
        order_id=order_id,
        user_id="alice",
        status="pending",
        version=1,
        data={"items": ITEMS, "amount_cents": 500, "currency": "EUR"},
    )


def cancelled(order_id: str = "ord_1") -> Event:
    return make_event(
        "order.cancelled",
        order_id=order_id,
        user_id="alice",
        status="cancelled",
        version=2,
        data={"reason": "out_of_stock"},
    )


@pytest.fixture
async def memory_bus() -> AsyncIterator[EventBus]:
    bus = open_bus("memory://")
    await bus.start()
    yield bus
    await bus.stop()


def _paid(store: Store, bus: EventBus) -> PaymentService:
    service = PaymentService(store, bus)
    store.conn.execute("INSERT INTO payments VALUES ('ord_1', 'alice', 'authorized', 500, '4242')")
    return service


@pytest.mark.parametrize(
    ("make", "cause", "topic", "produced"),
    [
        (lambda s, b: OrderService(s), authorized, "payments", "order.pending"),
        (lambda s, b: InventoryService(s), pending, "orders", "inventory.reserved"),
        (lambda s, b: BillingService(s), pending, "orders", "billing.invoiced"),
        (lambda s, b: DeliveryService(s), pending, "orders", "delivery.scheduled"),
        (_paid, cancelled, "orders", "payment.refunded"),
    ],
    ids=["order", "inventory", "billing", "delivery", "payment"],
)
async def test_an_input_handled_twice_gets_the_recorded_outputs(
    memory_bus: EventBus, make: Any, cause: Any, topic: str, produced: str
) -> None:
    store = Store()
    service: Service = make(store, memory_bus)
    runner = ServiceRunner(memory_bus, service)
    event = cause()
    record = Record(
        topic,
        0,
        0,
        event.order_id,
        encode_event(event),
        0,
        (("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),),
    )
    first = runner.process([record])
    tables = {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in _tables(store)}
    again = runner.process([record])
    assert [e["type"] for e in decoded_out(first)] == [produced]
    assert again == first  # byte for byte: same event id, time, data, headers
    assert decoded_out(first)[0]["event_id"] == derived_event_id(event.event_id, produced)
    assert runner.stats.replayed == 1
    # ... and the service's state did not move either.
    assert {
        t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in _tables(store)
    } == tables


async def test_another_copy_of_a_handled_input_produces_nothing(memory_bus: EventBus) -> None:
    """A producer's retry landed the same event twice: the second copy (at
    another offset) is not a redelivery, so its outputs are not sent again."""
    store = Store()
    runner = ServiceRunner(memory_bus, OrderService(store))
    event = authorized()
    first = runner.process([record_of(event, "payments", offset=3)])
    assert [e["type"] for e in decoded_out(first)] == ["order.pending"]
    assert runner.process([record_of(event, "payments", offset=7)]) == []
    assert runner.stats.duplicates == 1
    # The first copy redelivered (its transaction did not commit): re-sent.
    assert runner.process([record_of(event, "payments", offset=3)]) == first
    assert runner.stats.replayed == 1


def _tables(store: Store) -> list[str]:
    return [
        row[0]
        for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if row[0] not in ("processed", "outputs", "sources", "sqlite_sequence")
    ]


def decoded_out(records: Sequence[OutgoingRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


async def test_a_lost_ledger_still_derives_the_same_event_ids(memory_bus: EventBus) -> None:
    event = authorized()
    outputs = [
        ServiceRunner(memory_bus, OrderService(Store())).process([record_of(event, "payments")])
        for _ in range(2)
    ]
    assert [decoded_out(o)[0]["event_id"] for o in outputs] == [
        derived_event_id(event.event_id, "order.pending")
    ] * 2


# -- redelivery through the bus ---------------------------------------------


class _FlakyConsumer:
    """Publishes the outputs, then fails to commit: the classic crash window."""

    def __init__(self, inner: Consumer, bus: EventBus, owner: _FlakyBus) -> None:
        self._inner = inner
        self._bus = bus
        self._owner = owner

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        return await self._inner.getmany(timeout_ms, max_records)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._inner.commit(offsets)

    async def send_and_commit(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> None:
        if self._owner.failures_left and records:
            self._owner.failures_left -= 1
            await self._bus.publish(records)
            raise BusError("injected: the commit did not happen")
        await self._inner.send_and_commit(records, offsets)

    def assignment(self) -> frozenset[TopicPartition]:
        return self._inner.assignment()

    async def lag(self) -> int:
        return await self._inner.lag()

    async def stop(self) -> None:
        await self._inner.stop()


class _FlakyBus:
    def __init__(self, inner: EventBus, failures: int) -> None:
        self._inner = inner
        self.failures_left = failures

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        await self._inner.publish(records)

    async def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        transactional: bool = False,
        client_id: str | None = None,
    ) -> Consumer:
        inner = await self._inner.consumer(
            topics, group, transactional=transactional, client_id=client_id
        )
        return _FlakyConsumer(inner, self._inner, self)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return await self._inner.end_offsets(topic)

    def scan(self, topic: str) -> AsyncIterator[list[Record]]:
        return self._inner.scan(topic)


@pytest.mark.parametrize("backend", BUS_BACKENDS)
async def test_redelivery_after_a_lost_commit_resends_the_same_event_ids(backend: str) -> None:
    bus = open_bus(bus_url(backend), topic_prefix=unique("t"))
    await bus.start()
    flaky = _FlakyBus(bus, failures=1)
    runner = ServiceRunner(flaky, OrderService(Store()), group=unique("order"), retry_backoff_s=0.1)
    event = authorized()
    try:
        await bus.publish([OutgoingRecord("payments", event.order_id, encode_event(event))])
        await runner.start()
        # Once from the failed attempt, once more from the redelivery.
        records = await read_topic(bus, "orders", lambda got: len(got) >= 2)
        assert runner.stats.replayed == 1 and runner.stats.bus_errors == 1
        ids = {e["event_id"] for e in decoded(records)}
        assert ids == {derived_event_id(event.event_id, "order.pending")}
    finally:
        await runner.stop()
        await bus.stop()


@pytest.mark.parametrize("backend", BUS_BACKENDS)
async def test_a_duplicated_input_gets_its_output_once(backend: str) -> None:
    """A producer's retry put the input on the bus twice: a read_committed
    reader of the outputs sees the output once."""
    async with open_shop(backend, only=("order",)) as shop:
        event = authorized()
        duplicate = OutgoingRecord("payments", event.order_id, encode_event(event))
        await shop.bus.publish([duplicate])
        await shop.bus.publish([duplicate])
        stats = shop.stack.runners["order"].stats

        async def both_handled() -> bool | None:
            return True if stats.events >= 2 and stats.batches >= 1 else None

        await eventually(both_handled, 30)
        await asyncio.sleep(0.5)  # the second copy's (empty) transaction committed too
        records = await read_topic(shop.bus, "orders", lambda got: len(got) >= 1)
        assert [e["event_id"] for e in decoded(records)] == [
            derived_event_id(event.event_id, "order.pending")
        ]
        assert stats.duplicates == 1 and stats.replayed == 0


# -- the loop never dies -------------------------------------------------------


class _Exploding:
    name = "exploding"
    topics = ("payments",)

    def __init__(self) -> None:
        self.store = Store()
        self.seen: list[str] = []

    def handle(self, event: Event) -> list[Event]:
        self.seen.append(event.order_id)
        self.store.conn.execute("CREATE TABLE IF NOT EXISTS touched (x)")
        if event.order_id == "ord_bad":
            raise RuntimeError("a bug in the handler")
        return []


async def test_a_failing_handler_is_counted_and_set_aside(memory_bus: EventBus) -> None:
    service = _Exploding()
    runner = ServiceRunner(memory_bus, service, poll_timeout_ms=100)
    await runner.start()
    try:
        await memory_bus.publish(
            [
                OutgoingRecord("payments", o, encode_event(authorized(o)))
                for o in ("ord_bad", "ord_good")
            ]
        )
        letters = await read_topic(memory_bus, "deadletter", lambda got: len(got) >= 1, 10)
        reason = dict(letters[0].headers)["x-orderpush-reason"]
        assert reason.startswith(b"handler error: RuntimeError")

        async def both_seen() -> bool | None:
            return set(service.seen) == {"ord_bad", "ord_good"} or None

        await eventually(both_seen, 10)
        # Tried a bounded number of times (a passing error would have healed).
        assert runner.stats.handler_errors == POISON_ATTEMPTS
        assert service.seen.count("ord_bad") == POISON_ATTEMPTS
        # The failed event was rolled back: it is not in the ledger.
        assert service.store.recorded_outputs(authorized("ord_bad").event_id) is None
    finally:
        await runner.stop()


class _HangingConsumer:
    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        await asyncio.Event().wait()
        return []

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    async def send_and_commit(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> None: ...

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset()

    async def lag(self) -> int:
        return 0

    async def stop(self) -> None:
        await asyncio.Event().wait()


class _HangingBus(_FlakyBus):
    async def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        transactional: bool = False,
        client_id: str | None = None,
    ) -> Consumer:
        return _HangingConsumer()


async def test_stop_is_bounded_even_when_the_bus_hangs(memory_bus: EventBus) -> None:
    runner = ServiceRunner(_HangingBus(memory_bus, 0), OrderService(Store()))
    await runner.start()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(runner.stop(timeout_s=0.3), 5)
    assert asyncio.get_running_loop().time() - started < 2


# -- state survives a restart --------------------------------------------------


def _databases(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.glob("*.sqlite3"))


async def test_a_restarted_stack_keeps_its_state(tmp_path: Path) -> None:
    async with open_shop("memory", data_dir=tmp_path) as shop:
        first = await shop.place("alice", order_body("A"))
        order_id = first.json()["order_id"]
        done = await shop.wait_order("alice", order_id, lambda o: o["status"] == "confirmed")
        assert done["timeline"][-1]["data"]["invoice_number"] == "INV-000001"
        await shop.stack.stop()

        restarted = StubStack(shop.bus, data_dir=tmp_path, poll_timeout_ms=200)
        await restarted.start()
        try:
            assert restarted.view is not None
            assert [o["order_id"] for o in restarted.view.list_orders("alice")] == [order_id]
            assert restarted.payment is not None
            assert restarted.payment.payment_status(order_id) == "authorized"
            billing = restarted.services["billing"].store
            assert billing.conn.execute("SELECT COUNT(*) FROM invoices").fetchone()[0] == 1
            assert _databases(tmp_path) == sorted(
                f"{n}.sqlite3"
                for n in ("payment", "order", "inventory", "billing", "delivery", "view")
            )
        finally:
            await restarted.stop()
