"""Commits run behind the pump: in batch order, after their order-state
acknowledgement, merged while one is in flight."""

from __future__ import annotations

import asyncio

from gateway.batch_commits import OrderedCommits
from orderpush_core.bus import OutgoingRecord, Record, TopicPartition
from orderpush_core.bus.memory import MemoryConsumer, MemoryEventBus


async def _batches(n_records: int, per_batch: int) -> tuple[MemoryConsumer, list[list[Record]]]:
    bus = MemoryEventBus(partitions=1)
    await bus.publish([OutgoingRecord("t", "k", b"%d" % i) for i in range(n_records)])
    consumer = await bus.consumer(["t"], "g", client_id="c")
    assert isinstance(consumer, MemoryConsumer)
    batches: list[list[Record]] = []
    while len(batches) * per_batch < n_records:
        batches.append(await consumer.getmany(timeout_ms=100, max_records=per_batch))
    return consumer, batches


def _committed(consumer: MemoryConsumer) -> int | None:
    return consumer._group.committed.get(TopicPartition("t", 0))


async def test_nothing_is_committed_past_a_batch_whose_states_are_not_acknowledged() -> None:
    consumer, batches = await _batches(9, 3)
    commits = OrderedCommits()
    acks = [asyncio.get_running_loop().create_future() for _ in batches]
    for batch, ack in zip(batches, acks, strict=True):
        await commits.add(consumer, batch, ack)
    # The second and third are acknowledged, the first is not: an offset
    # past the first would say its order states were written.
    acks[1].set_result(None)
    acks[2].set_result(None)
    await asyncio.sleep(0.05)
    assert _committed(consumer) is None
    acks[0].set_result(None)
    await commits.flush()
    assert _committed(consumer) == 9
    assert commits.batches == 3


async def test_batches_added_while_a_commit_is_in_flight_go_out_in_one_request() -> None:
    consumer, batches = await _batches(30, 3)
    commits = OrderedCommits()
    first_ack = asyncio.get_running_loop().create_future()
    await commits.add(consumer, batches[0], first_ack)
    await asyncio.sleep(0)  # the first commit is now waiting for its ack
    for batch in batches[1:]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        await commits.add(consumer, batch, done)
    first_ack.set_result(None)
    await commits.flush()
    assert _committed(consumer) == 30
    assert commits.batches == 10
    assert commits.requests == 2


async def test_add_waits_when_too_many_batches_are_uncommitted() -> None:
    consumer, batches = await _batches(4, 1)
    commits = OrderedCommits(max_pending=2)
    slow = asyncio.get_running_loop().create_future()
    await commits.add(consumer, batches[0], slow)
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    await commits.add(consumer, batches[1], done)
    third = asyncio.ensure_future(commits.add(consumer, batches[2], done))
    await asyncio.sleep(0.05)
    assert not third.done()  # held until the broker catches up
    slow.set_result(None)
    await asyncio.wait_for(third, 1)
    await commits.flush()
    assert _committed(consumer) == 3


async def test_a_failed_commit_is_logged_and_later_batches_still_commit() -> None:
    consumer, batches = await _batches(6, 3)
    commits = OrderedCommits()
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    # The partition moved to another member: this member's commit fails.
    lost = consumer._positions.pop(TopicPartition("t", 0))
    await commits.add(consumer, batches[0], done)
    await commits.flush()
    assert _committed(consumer) is None
    consumer._positions[TopicPartition("t", 0)] = lost
    await commits.add(consumer, batches[1], done)
    await commits.flush()
    assert _committed(consumer) == 6
    assert commits.batches == 2
