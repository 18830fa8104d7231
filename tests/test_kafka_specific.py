"""Kafka-only behaviour of KafkaEventBus, proven against the real broker.

The contract suite covers what every bus does; this covers what only Kafka
has: transactions and read_committed, the topic prefix on the wire as seen by
outside clients, and aiokafka errors surfacing as BusError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orderpush_core.bus import BusError, OutgoingRecord, Record, TopicPartition
from orderpush_core.bus.base import next_offsets
from orderpush_core.bus.kafka import KafkaConsumer, KafkaEventBus, compacted_partition
from orderpush_core.events import ORDER_STATE_TOPIC
from tests.backends import KAFKA_BOOTSTRAP, unique

# tests/conftest.py deselects these when ORDERPUSH_TEST_BACKENDS leaves Kafka out.
pytestmark = pytest.mark.kafka


@pytest.fixture
async def bus() -> AsyncIterator[KafkaEventBus]:
    bus = KafkaEventBus(KAFKA_BOOTSTRAP, topic_prefix=unique("k"))
    await bus.start()
    yield bus
    await bus.stop()


async def collect(consumer: KafkaConsumer, count: int, timeout_s: float = 30.0) -> list[Record]:
    got: list[Record] = []

    async def loop() -> None:
        while len(got) < count:
            got.extend(await consumer.getmany(timeout_ms=200))

    await asyncio.wait_for(loop(), timeout_s)
    return got


async def raw_read_uncommitted(topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    """What is physically in the log, aborted records included."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=KAFKA_BOOTSTRAP,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
    )
    await reader.start()
    got: list[Any] = []
    try:

        async def loop() -> None:
            while len(got) < count:
                for batch in (await reader.getmany(timeout_ms=200)).values():
                    got.extend(batch)

        await asyncio.wait_for(loop(), timeout_s)
    finally:
        await reader.stop()
    return got


async def test_read_committed_hides_an_aborted_transaction(bus: KafkaEventBus) -> None:
    topic = bus.wire_name("orders")
    await bus.end_offsets("orders")  # creates the topic with 4 partitions
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA_BOOTSTRAP, transactional_id=unique("txn-test-")
    )
    await producer.start()
    try:
        with pytest.raises(RuntimeError, match="handler failed"):
            async with producer.transaction():
                for n in range(3):
                    await producer.send_and_wait(topic, b"aborted-%d" % n, key=b"ord-1")
                raise RuntimeError("handler failed")  # -> abort
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed", key=b"ord-1")
    finally:
        await producer.stop()
    await bus.publish([OutgoingRecord("orders", "ord-1", b"published")])

    # The aborted records are in the log...
    raw = await raw_read_uncommitted(topic, 5)
    aborted = [b"aborted-0", b"aborted-1", b"aborted-2"]
    assert [m.value for m in raw] == [*aborted, b"committed", b"published"]
    # ...but a bus consumer (read_committed) never sees them.
    consumer = await bus.consumer(["orders"], unique("g"))
    got = await collect(consumer, 2)
    assert [r.value for r in got] == [b"committed", b"published"]
    assert await consumer.getmany(timeout_ms=500) == []
    assert await consumer.lag() == 0
    await consumer.stop()


async def test_failed_send_and_commit_aborts_rewinds_and_can_retry(bus: KafkaEventBus) -> None:
    group = unique("g")
    await bus.publish([OutgoingRecord("payments", "ord-9", b"input-%d" % n) for n in range(3)])
    worker = await bus.consumer(["payments"], group, transactional=True, client_id="w")
    inputs = await collect(worker, 3)
    # The second output is larger than the producer's max request size, so
    # the transaction fails after the first output was handed to the producer.
    outputs = [
        OutgoingRecord("orders", "ord-9", b"derived-ok"),
        OutgoingRecord("orders", "ord-9", b"x" * 2_000_000),
    ]
    with pytest.raises(BusError, match=r"transaction|send"):
        await worker.send_and_commit(outputs, next_offsets(inputs))

    # Nothing of the aborted transaction is visible, and the inputs come back
    # (the member rewound to its last commit) instead of being skipped.
    again = await collect(worker, 3)
    assert [r.value for r in again] == [r.value for r in inputs]
    good = [OutgoingRecord("orders", "ord-9", b"derived-retry")]
    await worker.send_and_commit(good, next_offsets(again))  # on a fresh producer
    await worker.stop()

    # The aborted output did reach the log; read_committed hides it.
    raw = await raw_read_uncommitted(bus.wire_name("orders"), 2)
    assert [m.value for m in raw] == [b"derived-ok", b"derived-retry"]
    reader = await bus.consumer(["orders"], unique("g"))
    got = await collect(reader, 1)
    assert [r.value for r in got] == [b"derived-retry"]
    assert await reader.getmany(timeout_ms=500) == []
    await reader.stop()
    successor = await bus.consumer(["payments"], group)
    assert await successor.getmany(timeout_ms=1500) == []  # inputs were committed
    await successor.stop()


async def test_outside_record_arrives_with_logical_topic_key_and_headers(
    bus: KafkaEventBus,
) -> None:
    consumer = await bus.consumer(["delivery"], unique("g"))
    before_ms = int(time.time() * 1000)
    outside = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await outside.start()
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        meta = await outside.send_and_wait(
            bus.wire_name("delivery"),
            b'{"type":"delivery.scheduled"}',
            key="ord-\u00e9".encode(),
            headers=[("traceparent", traceparent), ("empty", b"")],
        )
    finally:
        await outside.stop()

    [record] = await collect(consumer, 1)
    assert record.topic == "delivery"
    assert (record.partition, record.offset) == (meta.partition, meta.offset)
    assert record.key == "ord-\u00e9"
    assert record.value == b'{"type":"delivery.scheduled"}'
    assert record.headers == (("traceparent", traceparent), ("empty", b""))
    assert before_ms - 5_000 <= record.timestamp_ms <= int(time.time() * 1000) + 5_000
    assert TopicPartition("delivery", meta.partition) in consumer.assignment()
    assert consumer.rebalances >= 1
    await consumer.stop()


async def test_published_records_are_plain_kafka_records_on_the_prefixed_topic(
    bus: KafkaEventBus,
) -> None:
    headers = (("traceparent", b"00-abc-def-01"),)
    await bus.publish([OutgoingRecord("billing", "ord-42", b"{}", headers)])
    [message] = await raw_read_uncommitted(bus.wire_name("billing"), 1)
    assert message.key == b"ord-42"
    assert message.value == b"{}"
    assert list(message.headers) == list(headers)
    ends = await bus.end_offsets("billing")
    assert ends[message.partition] == message.offset + 1
    assert len(ends) == 4


async def test_misuse_and_unreachable_broker_raise_bus_error(bus: KafkaEventBus) -> None:
    consumer = await bus.consumer(["inventory"], unique("g"))
    with pytest.raises(BusError, match="transactional=True"):
        await consumer.send_and_commit([], {TopicPartition("inventory", 0): 1})
    with pytest.raises(BusError):  # not assigned to this member
        await consumer.commit({TopicPartition("not-subscribed", 0): 1})
    # Stopping while a poll waits ends the poll with "nothing arrived".
    waiting = asyncio.ensure_future(consumer.getmany(timeout_ms=10_000))
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    await consumer.stop()
    assert await asyncio.wait_for(waiting, 5) == []
    assert asyncio.get_running_loop().time() - started < 5
    await consumer.stop()  # idempotent
    with pytest.raises(BusError, match="stopped"):
        await consumer.getmany(timeout_ms=10)

    nowhere = KafkaEventBus("127.0.0.1:1")  # nothing listens on port 1
    with pytest.raises(BusError, match=r"127\.0\.0\.1:1\b"):
        await asyncio.wait_for(nowhere.start(), 30)
    await nowhere.stop()
    await bus.stop()
    await bus.stop()  # idempotent
    with pytest.raises(BusError, match="stopped"):
        await bus.publish([OutgoingRecord("orders", "ord-1", b"{}")])


async def test_order_states_land_on_their_keys_partition_in_order(bus: KafkaEventBus) -> None:
    """The compacted order-state topic is partitioned by `compacted_partition`
    (not murmur2); every record arrives, on the partition its key maps to, in
    the order given, across several producer batches."""
    keys = [f"order-{i % 40}" for i in range(1200)]
    records = [
        OutgoingRecord(ORDER_STATE_TOPIC, key, b"v%05d" % i + b"x" * 200, (("h", b"1"),))
        for i, key in enumerate(keys)
    ]
    await bus.publish(records)
    got = [r async for batch in bus.scan(ORDER_STATE_TOPIC) for r in batch]
    assert sorted(r.value for r in got) == sorted(r.value for r in records)
    for r in got:
        assert r.key is not None
        assert r.tp.partition == compacted_partition(r.key.encode(), bus.partitions)
        assert r.headers == (("h", b"1"),)
    by_key: dict[str, list[bytes]] = {}
    for r in sorted(got, key=lambda r: (r.tp.partition, r.offset)):
        by_key.setdefault(r.key or "", []).append(r.value)
    for key, values in by_key.items():
        assert values == [r.value for r in records if r.key == key]
