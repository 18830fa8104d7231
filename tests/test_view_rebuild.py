"""Rebuilding the order views from `order-state` (gateway/rebuild.py), on
both session stores: the restore never moves an order back, the marker is
written only by the rebuild still in progress, and the rebuilder reads the
topic the pump writes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.rebuild import ViewRebuilder
from gateway.sessions import SessionStore, open_sessions
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.bus import OutgoingRecord
from orderpush_core.bus.memory import MemoryEventBus
from orderpush_core.events import ORDER_STATE_TOPIC, Event, encode_event, make_event
from tests.backends import REDIS_URL, SESSION_BACKENDS, sessions_url, unique


def order(order_id: str, version: int, user: str = "alice") -> Event:
    status = "pending" if version == 1 else "confirmed"
    return make_event(
        f"order.{status}", order_id=order_id, user_id=user, status=status, version=version
    )


@pytest.fixture(params=SESSION_BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SessionStore, str]]:
    prefix = unique("vr")
    store = open_sessions(sessions_url(request.param, prefix), "gw", key_prefix=prefix)
    await store.start(lambda deliveries: None)
    try:
        yield store, request.param
    finally:
        await store.stop()
        if request.param == "redis":
            client = Redis.from_url(REDIS_URL)
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def test_restore_writes_missing_and_older_orders_never_newer_ones(
    store: tuple[SessionStore, str],
) -> None:
    sessions, _ = store
    await sessions.restore_views([order("o1", 1)])
    assert [(o.order_id, o.version) for o in (await sessions.snapshot("alice")).orders] == [
        ("o1", 1)
    ]
    written = await sessions.restore_views([order("o1", 2), order("o2", 1)])
    assert written == 2
    # An older state (a lagging source) never moves an order back.
    assert await sessions.restore_views([order("o1", 1)]) == 0
    snapshot = await sessions.snapshot("alice")
    assert [(o.order_id, o.status, o.version) for o in snapshot.orders] == [
        ("o1", "confirmed", 2),
        ("o2", "pending", 1),
    ]


async def test_only_the_rebuild_in_progress_marks_the_views(
    store: tuple[SessionStore, str],
) -> None:
    sessions, backend = store
    if backend == "memory":
        assert await sessions.views_marked()  # one process: nothing to lose
        return
    assert not await sessions.views_marked()  # a new cluster
    token = await sessions.begin_rebuild()
    assert token is not None
    assert await sessions.begin_rebuild() is None  # one rebuild at a time
    # Redis lost its data meanwhile (here: the token alone).
    client = Redis.from_url(REDIS_URL)
    assert isinstance(sessions, RedisSessionStore)
    prefix = sessions._prefix
    await client.delete(f"{prefix}:rebuilding")
    await client.aclose()
    assert not await sessions.finish_rebuild(token)
    assert not await sessions.views_marked()
    again = await sessions.begin_rebuild()
    assert again is not None and await sessions.finish_rebuild(again)
    assert await sessions.views_marked()


async def test_the_rebuilder_restores_the_latest_version_of_each_order() -> None:
    bus = MemoryEventBus()
    prefix = unique("vr")
    sessions = open_sessions(REDIS_URL, "gw", key_prefix=prefix)
    await sessions.start(lambda deliveries: None)
    try:
        states = [order("o1", 1), order("o2", 1), order("o1", 2), order("o3", 1, user="bob")]
        # A compacted topic may still hold older records of a key: the
        # highest version wins.
        await bus.publish(
            [OutgoingRecord(ORDER_STATE_TOPIC, e.order_id, encode_event(e)) for e in states]
        )
        rebuilder = ViewRebuilder(bus, sessions)
        await rebuilder.check()
        assert rebuilder.rebuilds == 1 and rebuilder.orders_restored == 3
        assert await sessions.views_marked()
        alice = await sessions.snapshot("alice")
        assert [(o.order_id, o.version) for o in alice.orders] == [("o1", 2), ("o2", 1)]
        assert [o.order_id for o in (await sessions.snapshot("bob")).orders] == ["o3"]
        await rebuilder.check()  # marked: nothing to do
        assert rebuilder.rebuilds == 1
    finally:
        await sessions.stop()
        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


pytestmark = pytest.mark.redis
