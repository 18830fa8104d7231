"""A gap in cross-instance routing is repaired from the replay history.

Redis pub/sub is at most once: what is routed to an instance while its
subscription is down is lost. The gateway hears of every reconnect and
re-reads its users' histories, so their sockets get what routing lost,
once, without the clients doing anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.app import Gateway
from gateway.metrics import current
from gateway.sessions import Envelope
from gateway.sessions.redis import RedisSessionStore
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import issue_token
from orderpush_core.events import encode_event, make_event
from tests.backends import REDIS_URL, unique
from tests.harness import serve
from tests.wsclient import connect

pytestmark = pytest.mark.redis


@pytest.fixture
async def raw_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def pending(order: str, version: int = 1) -> Envelope:
    event = make_event(
        "order.pending", order_id=order, user_id="alice", status="pending", version=version
    )
    return Envelope(event=event, raw=encode_event(event), produced_ms=0)


async def test_events_routed_while_the_subscription_was_down_reach_the_socket(
    raw_redis: Redis,
) -> None:
    prefix, instance = unique("gap"), unique("gw")
    settings = Settings(sessions_url=REDIS_URL, session_key_prefix=prefix, instance_id=instance)
    app = gateway_app(settings)
    other = RedisSessionStore(REDIS_URL, unique("other"), key_prefix=prefix)
    await other.start(lambda batch: None)
    try:
        async with serve(app) as addr, connect(addr, issue_token("alice", DEV_SECRET)) as alice:
            gateway: Gateway = app.state.gateway
            await alice.recv_type("snapshot")
            await other.publish([pending("o1")])  # routed normally
            (first,) = await alice.events(1)
            assert first["event"]["order_id"] == "o1"

            # A route that never arrives: the event lands in the history while
            # the instance's lease is hidden, as if its subscription were down.
            sessions_key = f"{prefix}:{{alice}}:s"
            members = await raw_redis.smembers(sessions_key)
            await raw_redis.delete(sessions_key)
            await other.publish([pending("o2")])
            await raw_redis.sadd(sessions_key, *members)
            assert await alice.silent(0.3)

            # The subscription drops and comes back: the gateway repairs.
            clients = await raw_redis.client_list(_type="pubsub")
            [victim] = [c for c in clients if c["name"] == f"orderpush:{instance}"]
            await raw_redis.client_kill_filter(_id=victim["id"])
            (repaired,) = await alice.events(1, timeout_s=10)
            assert repaired["event"]["order_id"] == "o2"
            assert await alice.silent(0.5)  # o1 is not sent again
            assert current(gateway.metrics.routing_gaps) >= 1

            await other.publish([pending("o3")])  # and routing goes on
            (live,) = await alice.events(1)
            assert live["event"]["order_id"] == "o3"
    finally:
        await other.stop()
