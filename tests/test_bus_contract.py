"""The event bus contract, run against every implementation (memory, Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from orderpush_core.bus import Consumer, EventBus, OutgoingRecord, Record, open_bus
from orderpush_core.bus.base import next_offsets
from tests.backends import BUS_BACKENDS, bus_url, unique

BusFactory = Callable[[], Awaitable[EventBus]]


@pytest.fixture(params=BUS_BACKENDS)
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[BusFactory]:
    """Buses sharing one backend and one unique topic prefix (isolation)."""
    prefix = unique("t")
    memory_bus: EventBus | None = None
    started: list[EventBus] = []

    async def factory() -> EventBus:
        nonlocal memory_bus
        if request.param == "memory":
            # In memory, "another client of the same cluster" is the same object.
            if memory_bus is None:
                memory_bus = open_bus("memory://", topic_prefix=prefix)
                await memory_bus.start()
                started.append(memory_bus)
            return memory_bus
        bus = open_bus(bus_url(request.param), topic_prefix=prefix)
        await bus.start()
        started.append(bus)
        return bus

    yield factory
    for bus in started:
        await bus.stop()


async def collect(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Record]:
    got: list[Record] = []

    async def loop() -> None:
        while len(got) < count:
            got.extend(await consumer.getmany(timeout_ms=200))

    await asyncio.wait_for(loop(), timeout_s)
    return got


async def wait_assigned(*consumers: Consumer, timeout_s: float = 30.0) -> None:
    """Poll until every member has partitions (Kafka assigns during polls)."""

    async def loop() -> None:
        while not all(c.assignment() for c in consumers):
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))

    await asyncio.wait_for(loop(), timeout_s)


def records(topic: str, keys: int, per_key: int) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(topic, f"ord-{k}", f"{k}:{n}".encode())
        for n in range(per_key)
        for k in range(keys)
    ]


async def test_records_of_one_key_keep_their_order(make_bus: BusFactory) -> None:
    bus = await make_bus()
    await bus.publish(records("orders", keys=5, per_key=10))
    consumer = await bus.consumer(["orders"], unique("g"))
    got = await collect(consumer, 50)
    assert len(got) == 50
    by_key: dict[str | None, list[int]] = {}
    partition_of: dict[str | None, int] = {}
    for record in got:
        assert record.topic == "orders"
        by_key.setdefault(record.key, []).append(int(record.value.split(b":")[1]))
        assert partition_of.setdefault(record.key, record.partition) == record.partition
    assert all(seq == list(range(10)) for seq in by_key.values())
    await consumer.stop()


async def test_group_members_split_partitions_and_see_each_record_once(
    make_bus: BusFactory,
) -> None:
    bus = await make_bus()
    group = unique("g")
    await bus.publish(records("orders", keys=1, per_key=1))  # make the topic exist
    first = await bus.consumer(["orders"], group, client_id="a")
    second = await (await make_bus()).consumer(["orders"], group, client_id="b")
    await wait_assigned(first, second)
    # Drain the warm-up record wherever it went, then commit it.
    for c in (first, second):
        await c.commit(next_offsets(await c.getmany(timeout_ms=300)))
    assert not first.assignment() & second.assignment()

    await bus.publish(records("orders", keys=20, per_key=3))
    seen: list[tuple[str, Record]] = []

    async def drain(name: str, c: Consumer) -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while len(seen) < 60 and asyncio.get_running_loop().time() < deadline:
            batch = await c.getmany(timeout_ms=200)
            seen.extend((name, r) for r in batch)
            await c.commit(next_offsets(batch))

    await asyncio.gather(drain("a", first), drain("b", second))
    values = [r.value for _, r in seen]
    assert len(values) == 60 and len(set(values)) == 60
    assert {name for name, _ in seen} == {"a", "b"}  # both members got work
    owner = {r.key: name for name, r in seen}
    assert all(owner[r.key] == name for name, r in seen)  # a key stays with one member
    await first.stop()
    await second.stop()


async def test_uncommitted_records_are_redelivered_to_the_next_member(
    make_bus: BusFactory,
) -> None:
    bus = await make_bus()
    group = unique("g")
    await bus.publish(records("billing", keys=1, per_key=10))
    consumer = await bus.consumer(["billing"], group)
    got = await collect(consumer, 10)
    await consumer.commit(next_offsets(got[:4]))  # handed on only the first four
    await consumer.stop()

    successor = await (await make_bus()).consumer(["billing"], group)
    again = await collect(successor, 6)
    assert [r.value for r in again] == [r.value for r in got[4:]]
    await successor.commit(next_offsets(again))
    assert await successor.getmany(timeout_ms=500) == []
    await successor.stop()


async def test_send_and_commit_produces_and_commits_together(make_bus: BusFactory) -> None:
    bus = await make_bus()
    group = unique("g")
    await bus.publish(records("payments", keys=2, per_key=2))
    worker = await bus.consumer(["payments"], group, transactional=True, client_id="tx")
    inputs = await collect(worker, 4)
    outputs = [OutgoingRecord("orders", r.key or "", b"derived:" + r.value) for r in inputs]
    await worker.send_and_commit(outputs, next_offsets(inputs))
    await worker.stop()

    reader = await (await make_bus()).consumer(["orders"], unique("g"))
    derived = await collect(reader, 4)
    assert sorted(r.value for r in derived) == sorted(o.value for o in outputs)
    await reader.stop()
    # The inputs were committed in the same step: a new member of the group
    # starts after them.
    successor = await (await make_bus()).consumer(["payments"], group)
    await wait_assigned(successor)
    assert await successor.getmany(timeout_ms=1000) == []
    await successor.stop()


async def test_lag_and_end_offsets_count_unread_records(make_bus: BusFactory) -> None:
    bus = await make_bus()
    await bus.publish(records("delivery", keys=3, per_key=4))
    ends = await bus.end_offsets("delivery")
    assert sum(ends.values()) == 12
    consumer = await bus.consumer(["delivery"], unique("g"))
    await wait_assigned(consumer)
    got = await collect(consumer, 12)
    assert len(got) == 12
    assert await consumer.lag() == 0
    await consumer.stop()


async def test_topic_prefix_isolates_buses(make_bus: BusFactory) -> None:
    bus = await make_bus()
    await bus.publish(records("inventory", keys=1, per_key=3))
    other = open_bus(bus_url("memory"), topic_prefix=unique("other"))
    await other.start()
    consumer = await other.consumer(["inventory"], unique("g"))
    assert await consumer.getmany(timeout_ms=300) == []
    await consumer.stop()
    await other.stop()
