"""The `SessionHistory` contract (history, view, routing of what is appended),
run against every implementation: memory and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.sessions import Envelope, Snapshot, cursor_key
from orderpush_core.events import encode_event, make_event
from tests.backends import SESSION_BACKENDS
from tests.sessions_support import InstanceFactory, instances, order_event


@pytest.fixture(params=SESSION_BACKENDS)
async def make_instance(request: pytest.FixtureRequest) -> AsyncIterator[InstanceFactory]:
    """Instances sharing one backend, isolated from other tests by name."""
    async for factory in instances(request.param):
        yield factory


async def test_publish_returns_deliveries_with_growing_cursors(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    items = [order_event("alice", "o1", v) for v in (1, 2, 3)]
    deliveries = await a.store.publish(items)
    assert [d.event.event_id for d in deliveries] == [i.event.event_id for i in items]
    assert [d.raw for d in deliveries] == [i.raw for i in items]
    keys = [cursor_key(d.cursor) for d in deliveries]
    assert keys == sorted(keys) and len(set(keys)) == 3


async def test_history_since_returns_exactly_what_came_after(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    first = await a.store.publish([order_event("alice", "o1", 1)])
    later = await a.store.publish([order_event("alice", "o1", v) for v in (2, 3)])
    await a.store.publish([order_event("bob", "o9", 1)])
    missed = await a.store.history_since("alice", first[0].cursor)
    assert missed is not None
    assert [d.event.version for d in missed] == [2, 3]
    assert [d.cursor for d in missed] == [d.cursor for d in later]
    assert all(d.user_id == "alice" and d.event.user_id == "alice" for d in missed)
    assert await a.store.history_since("alice", later[-1].cursor) == []


async def test_redelivered_event_is_appended_once_and_routed_again(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    await b.store.add_session("alice")
    item = order_event("alice", "o1", 1)
    (first,) = await a.store.publish([item])
    (again,) = await a.store.publish([item])  # e.g. redelivered after a crash
    assert again.cursor == first.cursor
    assert again.event.event_id == item.event.event_id
    history = await a.store.history_since("alice", "0-0")
    assert history is not None and [d.cursor for d in history] == [first.cursor]
    await b.wait_received(2)
    assert [d.cursor for d in b.received] == [first.cursor, first.cursor]


async def test_stats_count_appends_but_not_redeliveries(make_instance: InstanceFactory) -> None:
    a = await make_instance("a")
    item = order_event("alice", "o1", 1)
    await a.store.publish([item, order_event("alice", "o1", 2)])
    await a.store.publish([item])  # a redelivery: routed again, not appended
    assert a.store.stats().published_events == 2


async def test_snapshot_keeps_the_newest_version_of_each_order(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    await a.store.publish([order_event("alice", "o1", 1), order_event("alice", "o2", 1)])
    await a.store.publish([order_event("alice", "o1", 2, "confirmed")])
    last = await a.store.publish([order_event("alice", "o1", 1)])  # stale, out of order
    snap = await a.store.snapshot("alice")
    states = {o.order_id: (o.status, o.version) for o in snap.orders}
    assert states == {"o1": ("confirmed", 2), "o2": ("pending", 1)}
    assert snap.cursor == last[0].cursor
    assert await a.store.history_since("alice", snap.cursor) == []
    empty = await a.store.snapshot("nobody")
    assert empty.orders == [] and await a.store.history_since("nobody", empty.cursor) == []


async def test_cursor_that_history_no_longer_covers_is_refused(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a", history_max=5)
    deliveries = []
    for v in range(1, 11):
        deliveries += await a.store.publish([order_event("alice", "o1", v)])
    assert await a.store.history_since("alice", deliveries[0].cursor) is None
    tail = await a.store.history_since("alice", deliveries[6].cursor)
    assert tail is not None and [d.event.version for d in tail] == [8, 9, 10]
    assert await a.store.history_since("alice", "not-a-cursor") is None
    assert await a.store.history_since("alice", "99999999999999-0") is None


async def test_trace_context_survives_history_and_routing(make_instance: InstanceFactory) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    await b.store.add_session("alice")
    event = make_event("payment.authorized", order_id="o1", user_id="alice")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    (delivery,) = await a.store.publish(
        [Envelope(event=event, raw=encode_event(event), produced_ms=5, traceparent=traceparent)]
    )
    assert delivery.traceparent == traceparent
    history = await a.store.history_since("alice", "0-0")
    assert history is not None and history[0].traceparent == traceparent
    await b.wait_received(1)
    assert b.received[0].traceparent == traceparent
    (plain,) = await a.store.publish([order_event("alice", "o2", 1)])
    assert plain.traceparent is None
    history = await a.store.history_since("alice", delivery.cursor)
    assert history is not None and history[0].traceparent is None


async def test_cursors_count_each_users_events_without_gaps(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    mixed = [order_event(user, "o1", v) for v in (1, 2, 3) for user in ("alice", "bob")]
    first = await a.store.publish(mixed[:3])
    second = await b.store.publish(mixed[3:])  # another instance, same counters
    keys: dict[str, list[tuple[int, int]]] = {}
    for d in [*first, *second]:
        keys.setdefault(d.user_id, []).append(cursor_key(d.cursor))
    for user, user_keys in keys.items():
        epochs = {epoch for epoch, _ in user_keys}
        assert len(epochs) == 1 and epochs != {0}, (user, user_keys)
        assert [seq for _, seq in user_keys] == [1, 2, 3], (user, user_keys)
    (again,) = await b.store.publish([mixed[0]])  # a redelivery takes no new seq
    assert again.cursor == first[0].cursor
    (fourth,) = await a.store.publish([order_event("alice", "o1", 4)])
    assert cursor_key(fourth.cursor)[1] == 4


async def test_cursors_of_another_epoch_or_from_the_future_are_refused(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    deliveries = await a.store.publish([order_event("alice", "o1", v) for v in (1, 2, 3)])
    epoch, _ = cursor_key(deliveries[0].cursor)
    everything = await a.store.history_since("alice", "0-0")
    assert everything is not None and [d.cursor for d in everything] == [
        d.cursor for d in deliveries
    ]
    from_start = await a.store.history_since("alice", f"{epoch}-0")
    assert from_start is not None and len(from_start) == 3
    assert await a.store.history_since("alice", f"{epoch}-3") == []
    assert await a.store.history_since("alice", f"{epoch}-4") is None
    assert await a.store.history_since("alice", f"{epoch - 1}-1") is None
    assert await a.store.history_since("alice", f"{epoch + 1}-1") is None


async def test_an_idle_history_expires_and_comes_back_as_a_new_epoch(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a", history_idle_s=1.0)
    (old,) = await a.store.publish([order_event("alice", "o1", 1)])
    await a.store.publish([order_event("bob", "o1", 1)])
    await asyncio.sleep(0.6)
    await a.store.publish([order_event("bob", "o1", 2)])  # bob stays active
    await asyncio.sleep(0.6)
    assert await a.store.snapshot("alice") == Snapshot([], "0-0")
    assert await a.store.history_since("alice", old.cursor) is None
    bob = await a.store.snapshot("bob")
    assert [(o.order_id, o.version) for o in bob.orders] == [("o1", 2)]
    (new,) = await a.store.publish([order_event("alice", "o2", 1)])
    new_epoch, new_seq = cursor_key(new.cursor)
    assert new_epoch > cursor_key(old.cursor)[0] and new_seq == 1
    assert await a.store.history_since("alice", old.cursor) is None
    history = await a.store.history_since("alice", "0-0")
    assert history is not None and [d.cursor for d in history] == [new.cursor]


async def test_dedupe_remembers_the_events_still_in_the_history(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a", history_max=3)
    items = [order_event("alice", "o1", v) for v in range(1, 6)]
    deliveries = await a.store.publish(items)
    # Still in the history: the same cursor back, nothing appended.
    (again,) = await a.store.publish([items[4]])
    assert again.cursor == deliveries[4].cursor
    # Trimmed away long ago: outside the dedupe window, appended as new.
    (old,) = await a.store.publish([items[0]])
    assert cursor_key(old.cursor)[1] == 6
