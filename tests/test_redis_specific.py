"""Redis-only behaviour of RedisSessionStore, against the real server.

The shared semantics are in test_sessions_contract.py; these tests cover what
only Redis has: round trips, the pub/sub reader, key TTLs, scripts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.sessions import Delivery, Envelope, SessionStoreError
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.events import encode_event, make_event
from tests.backends import REDIS_URL, unique

pytestmark = pytest.mark.redis


class Node:
    def __init__(self, store: RedisSessionStore) -> None:
        self.store = store
        self.received: list[Delivery] = []
        self.batches = 0
        self._arrived = asyncio.Event()

    def deliver(self, batch: Sequence[Delivery]) -> None:
        self.batches += 1
        self.received.extend(batch)
        self._arrived.set()

    async def wait_received(self, count: int, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def raw_redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def make_node(prefix: str) -> AsyncIterator[NodeFactory]:
    started: list[Node] = []

    async def factory(instance_id: str, **options: Any) -> Node:
        store = RedisSessionStore(REDIS_URL, instance_id, key_prefix=prefix, **options)
        node = Node(store)
        await store.start(node.deliver)
        started.append(node)
        return node

    yield factory
    for node in started:
        await node.store.stop()


def order_event(user: str, order: str, version: int) -> Envelope:
    event = make_event(
        "order.pending", order_id=order, user_id=user, status="pending", version=version
    )
    return Envelope(event=event, raw=encode_event(event), produced_ms=version)


async def wait_subscribers(
    client: Redis, channel: str, count: int, timeout_s: float = 10.0
) -> None:
    async def loop() -> None:
        while True:
            [(_, subscribers)] = await client.pubsub_numsub(channel)
            if subscribers == count:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout_s)


async def test_a_batch_costs_one_round_trip_whatever_its_size(make_node: NodeFactory) -> None:
    a = await make_node("a")
    b = await make_node("b")
    c = await make_node("c")
    users = [f"u{i}" for i in range(10)]
    for user in users[:5]:
        await b.store.add_session(user)
    for user in users[5:]:
        await c.store.add_session(user)
    await a.store.add_session("u0")  # local sessions are never routed to
    items = [order_event(users[i % 10], f"o{i}", 1) for i in range(100)]

    before = a.store.round_trips
    deliveries = await a.store.publish(items)
    used = a.store.round_trips - before

    assert used == 1  # append, lease lookup and routing in one script call
    assert [d.event.event_id for d in deliveries] == [i.event.event_id for i in items]
    assert a.store.published_events == 100
    await b.wait_received(50)
    await c.wait_received(50)
    assert {d.user_id for d in b.received} == set(users[:5])
    assert {d.user_id for d in c.received} == set(users[5:])
    assert b.batches == c.batches == 1  # one PUBLISH per instance, not per event
    assert a.received == []
    print(f"round trips per delivered event: {used / len(deliveries):.3f}")

    # Nobody else holds these users: the lease read rides in the append pipeline.
    before = a.store.round_trips
    await a.store.publish([order_event(f"x{i}", "o1", 1) for i in range(20)])
    assert a.store.round_trips - before == 1


async def test_reader_survives_garbage_and_delivers_the_next_message(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a")
    b = await make_node("b")
    await b.store.add_session("bob")
    channel = f"{prefix}:instance:b"
    await raw_redis.publish(channel, b"\xc1 not msgpack")
    await raw_redis.publish(channel, b'{"json": "is not the wire format"}')
    await raw_redis.publish(channel, b"\x91\x94\xa3bob\xa33-1\xc4\x02{}\x00")  # poison event
    item = order_event("bob", "o1", 1)
    await a.store.publish([item])
    await b.wait_received(1)
    assert [d.event.event_id for d in b.received] == [item.event.event_id]
    assert b.store.bad_messages == 3


async def test_reader_drops_an_event_routed_under_another_user(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    b = await make_node("b")
    raw = encode_event(order_event("mallory", "o1", 1).event)
    wire = b"\x91\x94\xa3bob\xa33-1\xc4" + bytes([len(raw)]) + raw + b"\x00"
    await raw_redis.publish(f"{prefix}:instance:b", wire)
    await asyncio.sleep(0.3)
    assert b.received == [] and b.store.bad_messages == 1


async def test_reader_resubscribes_after_its_connection_is_killed(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a")
    name = unique("b")  # client names are server-wide: keep ours apart from other runs
    b = await make_node(name)
    await b.store.add_session("bob")
    channel = f"{prefix}:instance:{name}"
    clients = await raw_redis.client_list(_type="pubsub")
    [victim] = [c for c in clients if c["name"] == f"orderpush:{name}"]
    await raw_redis.client_kill_filter(_id=victim["id"])
    await wait_subscribers(raw_redis, channel, 1)
    item = order_event("bob", "o1", 1)
    await a.store.publish([item])
    await b.wait_received(1, timeout_s=10)
    assert b.received[0].event.event_id == item.event.event_id


async def test_a_dead_instances_entries_are_pruned_and_a_beat_costs_one_round_trip(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a")
    b = await make_node("b", lease_ttl_s=1.0)
    users = [f"u{i}" for i in range(3000)]
    for user in users[:3]:
        await b.store.add_session(user)
    before = b.store.round_trips
    await b.store.refresh_leases(users[:3])
    assert b.store.round_trips - before == 2  # the beat, and the slow sweep's chunk
    assert 0 < await raw_redis.pttl(f"{prefix}:{{u0}}:s") <= 7 * 86_400_000
    await asyncio.sleep(1.3)  # no beat: as if b was killed
    await a.store.publish([order_event("u0", "o1", 1)])
    assert await raw_redis.smembers(f"{prefix}:{{u0}}:s") == set()  # pruned on the way
    assert b.received == []


async def test_a_restarted_instance_does_not_inherit_its_previous_runs_sessions(
    make_node: NodeFactory,
) -> None:
    a = await make_node("a")
    await (await make_node("b", lease_ttl_s=1.0)).store.add_session("bob")  # then killed
    again = await make_node("b", lease_ttl_s=1.0)  # same id, a new run
    await again.store.add_session("carol")
    await asyncio.sleep(1.3)
    await again.store.refresh_leases(["carol"])
    assert await a.store.locate(["bob", "carol"]) == {"bob": set(), "carol": {"b"}}


async def test_an_instance_that_lost_its_lease_writes_its_sessions_again(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a")
    gaps: list[int] = []
    b = await make_node("b")
    b.store._leases.on_gap = gaps.append  # as the gateway does at start
    await b.store.add_session("bob")
    await raw_redis.delete(f"{prefix}:instances", f"{prefix}:{{bob}}:s")  # Redis lost it all
    await a.store.publish([order_event("bob", "o1", 1)])
    await b.store.refresh_leases(["bob"])
    assert len(gaps) == 1 and b.store.lease_rewrites == 1  # the gateway refills its sockets
    item = order_event("bob", "o2", 1)
    await a.store.publish([item])
    await b.wait_received(1)
    assert b.received[0].event.event_id == item.event.event_id


async def test_a_users_keys_share_a_hash_tag_expire_when_idle_and_are_few(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a", history_idle_s=600.0)
    await a.store.add_session("alice")
    await a.store.publish([order_event("alice", "o1", v) for v in range(1, 51)])
    keys = sorted([k.decode() async for k in raw_redis.scan_iter(match=f"{prefix}:*")])
    # No key per event: dedupe lives in one hash per user.
    assert keys == [
        f"{prefix}:instances",
        f"{prefix}:{{alice}}:d",
        f"{prefix}:{{alice}}:h",
        f"{prefix}:{{alice}}:s",
        f"{prefix}:{{alice}}:v",
    ]
    for kind in "dhsv":
        assert 0 < await raw_redis.pttl(f"{prefix}:{{alice}}:{kind}") <= 600_000, kind
    assert await raw_redis.hlen(f"{prefix}:{{alice}}:d") == 50


async def test_the_dedupe_map_is_trimmed_with_the_history(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    a = await make_node("a", history_max=10)
    await a.store.publish([order_event("alice", "o1", v) for v in range(1, 26)])
    assert await raw_redis.xlen(f"{prefix}:{{alice}}:h") == 10
    assert await raw_redis.hlen(f"{prefix}:{{alice}}:d") == 10


async def test_publish_recovers_from_a_flushed_script_cache(
    make_node: NodeFactory, raw_redis: Redis
) -> None:
    a = await make_node("a")
    await raw_redis.script_flush()  # what a Redis restart does to the cache
    item = order_event("alice", "o1", 1)
    deliveries = await a.store.publish([item])
    assert [d.event.event_id for d in deliveries] == [item.event.event_id]
    (again,) = await a.store.publish([item])
    assert again.cursor == deliveries[0].cursor and a.store.published_events == 1


async def test_a_retried_call_gets_its_entries_back(make_node: NodeFactory) -> None:
    """A reply lost after Redis ran the script must not turn events into duplicates."""
    a = await make_node("a")
    batch = [order_event("alice", "o1", 1), order_event("alice", "o1", 2)]
    appended = await a.store._run_append(a.store._append_args(batch, "attempt1"))
    cursors = appended[0:4:2]
    assert appended[1:4:2] == [1, 1]  # new to the caller
    # Our retry: still new to us.
    assert await a.store._run_append(a.store._append_args(batch, "attempt1")) == appended
    # Another attempt (a redelivery) gets the same cursors, marked not new.
    other = await a.store._run_append(a.store._append_args(batch, "attempt2"))
    assert other[0:4:2] == cursors and other[1:4:2] == [0, 0]


async def test_duplicates_within_one_batch_are_appended_once(make_node: NodeFactory) -> None:
    a = await make_node("a")
    item = order_event("alice", "o1", 1)
    assert len(await a.store.publish([item, item])) == 1
    history = await a.store.history_since("alice", "0-0")
    assert history is not None and len(history) == 1


async def test_history_keeps_raw_bytes_and_produced_ms(make_node: NodeFactory) -> None:
    a = await make_node("a")
    event = make_event("payment.authorized", order_id="o1", user_id="alice")
    raw = encode_event(event)[:-1] + b',"future_field":[1,2]}'  # unknown fields survive
    await a.store.publish([Envelope(event=event, raw=raw, produced_ms=1234)])
    history = await a.store.history_since("alice", "0-0")
    assert history is not None and len(history) == 1
    assert history[0].raw == raw and history[0].produced_ms == 1234


async def test_cursors_redis_cannot_parse_are_refused(make_node: NodeFactory) -> None:
    a = await make_node("a")
    await a.store.publish([order_event("alice", "o1", 1)])
    assert await a.store.history_since("alice", "99999999999999999999999-0") is None
    assert await a.store.history_since("alice", "1-99999999999999999999999") is None
    assert await a.store.history_since("nobody", "5-0") is None


async def test_a_history_written_before_epochs_gets_a_snapshot_then_goes_on(
    make_node: NodeFactory, raw_redis: Redis, prefix: str
) -> None:
    """Upgrading: a stream with Redis-made ids (`<ms>-0`, `<ms>-1`) is
    carried on; old cursors are refused (a snapshot), new ones work."""
    a = await make_node("a")
    stream = f"{prefix}:{{alice}}:h"
    old = order_event("alice", "o1", 1)
    await raw_redis.xadd(stream, {"raw": old.raw, "produced_ms": 1, "tp": ""}, id="1700000000000-0")
    await raw_redis.xadd(stream, {"raw": old.raw, "produced_ms": 1, "tp": ""}, id="1700000000500-0")
    assert await a.store.history_since("alice", "1700000000000-0") is None
    (new,) = await a.store.publish([order_event("alice", "o1", 2)])
    assert new.cursor == "1700000000500-1"
    tail = await a.store.history_since("alice", "1700000000500-0")
    assert tail is not None and [d.cursor for d in tail] == [new.cursor]


async def test_unreachable_redis_fails_at_start_naming_the_url() -> None:
    store = RedisSessionStore("redis://ops:hunter2@127.0.0.1:1/15", "a")
    with pytest.raises(SessionStoreError) as caught:
        await store.start(lambda batch: None)
    assert "redis://ops:***@127.0.0.1:1/15" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    await store.stop()
    await store.stop()  # idempotent


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(SessionStoreError, match="braces"):
        RedisSessionStore(REDIS_URL, "a", key_prefix="{bad}")


async def test_a_dropped_subscription_is_reported_as_a_gap(raw_redis: Redis, prefix: str) -> None:
    """Routes published while the subscription is down are lost (pub/sub is
    at most once): the store says so, and since when, once it is back."""
    name = unique("g")
    gaps: list[int] = []
    store = RedisSessionStore(REDIS_URL, name, key_prefix=prefix)
    await store.start(lambda batch: None, gaps.append)
    try:
        before_ms = int(time.time() * 1000)
        clients = await raw_redis.client_list(_type="pubsub")
        [victim] = [c for c in clients if c["name"] == f"orderpush:{name}"]
        await raw_redis.client_kill_filter(_id=victim["id"])
        await wait_subscribers(raw_redis, f"{prefix}:instance:{name}", 1)
        async with asyncio.timeout(5):
            while not gaps:
                await asyncio.sleep(0.01)
        assert store.gaps == 1
        assert before_ms <= gaps[0] <= int(time.time() * 1000)
    finally:
        await store.stop()
