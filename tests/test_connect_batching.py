"""The per-connect Redis work of many sockets in one round trip, against the
real Redis: socket counts (presence), route leases and snapshots that arrive
together are batched, with the guarantees of one call each (the per-user
limit, order of a user's lease changes, snapshot/cursor atomicity, the views
marker). End to end: a burst of real WebSocket clients on a real uvicorn
gateway over Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from gateway.app import Gateway
from gateway.presence.redis import RedisPresence
from gateway.protocol import CloseCode
from gateway.sessions.base import ZERO_CURSOR
from gateway.sessions.redis import RedisSessionStore
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import issue_token
from tests.backends import REDIS_URL
from tests.harness import serve
from tests.sessions_support import order_event
from tests.wsclient import Client, connect

pytestmark = pytest.mark.redis


@contextlib.asynccontextmanager
async def store(prefix: str, instance_id: str = "a") -> AsyncIterator[RedisSessionStore]:
    sessions = RedisSessionStore(REDIS_URL, instance_id, key_prefix=prefix)
    await sessions.start(lambda batch: None)
    try:
        yield sessions
    finally:
        await sessions.stop()


async def test_counts_made_together_keep_the_per_user_limit(prefix: str) -> None:
    a = RedisPresence(REDIS_URL, "A", key_prefix=prefix)
    b = RedisPresence(REDIS_URL, "B", key_prefix=prefix)
    await a.start()
    await b.start()
    try:
        async with asyncio.timeout(30):
            admitted = await asyncio.gather(
                *(a.acquire("u", f"a{n}", 3) for n in range(4)),
                *(b.acquire("u", f"b{n}", 3) for n in range(4)),
                *(a.acquire(f"other{n}", "x", 3) for n in range(5)),
            )
            assert admitted[:8].count(True) == 3  # never more than the limit
            assert admitted[8:] == [True] * 5
            assert await a.count("u") == 3
            # One instance's release and count of one user in one batch, in order.
            counted = await asyncio.gather(*(a.acquire("v", f"s{n}", 3) for n in range(4)))
            assert counted == [True, True, True, False]
            _, again = await asyncio.gather(a.release("v", "s0"), a.acquire("v", "late", 3))
            assert again is True and await a.count("v") == 3
            # Leases of every held socket extended in one refresh (chunked).
            await a.refresh()
            await b.refresh()
            assert await a.count("u") == 3
    finally:
        await a.stop()
        await b.stop()


async def test_lease_changes_made_together_apply_in_order(prefix: str) -> None:
    async with store(prefix, "a") as a, store(prefix, "b") as b:
        async with asyncio.timeout(30):
            trips = b.round_trips
            await asyncio.gather(*(b.add_session(f"u{n}") for n in range(50)))
            assert b.round_trips - trips < 50  # batched, not one call each
            await asyncio.gather(b.add_session("gone"), b.remove_session("gone"))
            await asyncio.gather(b.remove_session("back"), b.add_session("back"))
            located = await a.locate(["u0", "u49", "gone", "back"])
            assert located == {"u0": {"b"}, "u49": {"b"}, "gone": set(), "back": {"b"}}


async def test_snapshots_read_together_are_each_users_own_and_carry_the_views_marker(
    prefix: str,
) -> None:
    async with store(prefix) as a:
        async with asyncio.timeout(30):
            deliveries = await a.publish(
                [order_event(f"u{n}", f"o{n}-{k}", 1) for n in range(20) for k in range(n % 3)]
            )
            last = {d.user_id: d.cursor for d in deliveries}
            trips = a.round_trips
            snapshots = await asyncio.gather(*(a.snapshot(f"u{n}") for n in range(20)))
            assert a.round_trips - trips < 20
            for n, snapshot in enumerate(snapshots):
                assert [o.order_id for o in snapshot.orders] == [f"o{n}-{k}" for k in range(n % 3)]
                assert snapshot.cursor == last.get(f"u{n}", ZERO_CURSOR)
                assert snapshot.views_whole is False  # a new cluster: no marker yet
            token = await a.begin_rebuild()
            assert token is not None and await a.finish_rebuild(token)
            assert (await a.snapshot("u1")).views_whole is True


@dataclass
class Outcome:
    """A client of the burst: open with its snapshot, or refused with a code."""

    user: str
    client: Client | None = None
    snapshot: dict[str, Any] | None = None
    close_code: int | None = None


async def _connect(stack: contextlib.AsyncExitStack, addr: str, user: str) -> Outcome:
    client = await stack.enter_async_context(
        connect(addr, issue_token(user, DEV_SECRET), handshake=False)
    )
    try:
        if (await client.recv(timeout_s=30))["type"] == "welcome":
            return Outcome(user, client, await client.recv_type("snapshot", timeout_s=30))
    except ConnectionClosed:
        pass
    return Outcome(user, close_code=await client.closed_with(30))


async def test_a_burst_of_connects_is_batched_and_keeps_every_guarantee(prefix: str) -> None:
    settings = Settings(sessions_url=REDIS_URL, session_key_prefix=prefix, max_sockets_per_user=2)
    app = gateway_app(settings)
    gateway: Gateway = app.state.gateway
    users = [f"burst{n}" for n in range(40)]
    async with (
        store(prefix, "publisher") as publisher,
        serve(app) as addr,
        contextlib.AsyncExitStack() as stack,
        asyncio.timeout(90),
    ):
        await publisher.publish([order_event(user, f"order-{user}", 2) for user in users])
        trips = gateway.store.stats().round_trips or 0
        outcomes = await asyncio.gather(
            *(_connect(stack, addr, user) for user in users for _ in range(3))
        )
        served = [o for o in outcomes if o.client is not None]
        # Three sockets per user at once, two allowed: one refused each.
        assert [o.close_code for o in outcomes if o.client is None] == [
            CloseCode.TOO_MANY_SOCKETS
        ] * len(users)
        assert sorted(o.user for o in served) == sorted(users * 2)
        for outcome in served:
            assert outcome.snapshot is not None
            orders = [(o["order_id"], o["version"]) for o in outcome.snapshot["orders"]]
            assert orders == [(f"order-{outcome.user}", 2)]
        # 80 snapshots and 40 lease writes (the counts go through presence's
        # own client): batched, far fewer round trips than sockets.
        assert (gateway.store.stats().round_trips or 0) - trips < len(served)
        # Each user's route lease is in place: another instance's event for
        # the user reaches both of its sockets here.
        await publisher.publish([order_event(user, f"order-{user}", 3) for user in users])
        for outcome in served:
            assert outcome.client is not None
            (event,) = await outcome.client.events(1, timeout_s=30)
            assert event["event"]["user_id"] == outcome.user
            assert event["event"]["version"] == 3
