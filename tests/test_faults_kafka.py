"""Kafka outages: the gateway rides out a hung broker and a crashed one.

A private single-node Kafka, started by scripts/services.sh on free ports in
its own run dir (its data kept across a restart), is paused or killed here;
the shared broker (9092) is never touched. The gateway tests run a gateway
in-process (real uvicorn, real WebSocket client) on it and on a private
redis-server; one test is the bus alone across a broker restart, one is a
gateway shutting down while the broker is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.sessions.base import cursor_key
from gateway.sessions.redis import RedisSessionStore
from gateway.settings import Settings
from orderpush.apps import gateway_app
from orderpush_core.bus import BusError, OutgoingRecord, Record
from orderpush_core.bus.base import next_offsets
from orderpush_core.bus.kafka import KafkaConsumer, KafkaEventBus
from tests.backends import unique
from tests.faults import (
    SECRET,
    Feed,
    Subscriber,
    check_exactly_once,
    committed_offsets,
    history_event_ids,
    poll_until,
    producer,
    publish,
    subscribed,
    token,
)
from tests.harness import serve
from tests.processes import PrivateKafka, PrivateRedis
from tests.wsclient import connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

#: The gateway's consumers use a 3 s session timeout (ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS;
#: an outage longer than that makes the group coordinator drop the member.
SESSION_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path_factory.mktemp("kafka"))
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def broker(module_broker: PrivateKafka) -> PrivateKafka:
    """The module's broker, running (a test may have left it killed)."""
    if not module_broker.running():
        module_broker.start()
    return module_broker


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis", persistent=False).running() as server:
        yield server


@dataclass
class Running:
    addr: str
    gateway: Gateway
    prefix: str
    sessions_url: str

    async def consumed_all(self) -> bool:
        return await self.gateway.pump.lag() == 0


@contextlib.asynccontextmanager
async def gateway(broker: PrivateKafka, redis: PrivateRedis) -> AsyncIterator[Running]:
    prefix = unique("fk")
    settings = Settings(
        bus_url=f"kafka://{broker.bootstrap}",
        sessions_url=redis.url,
        topic_prefix=prefix,
        session_key_prefix=prefix,
        instance_id=f"{prefix}-gw",
        jwt_secret=SECRET,
    )
    app = gateway_app(settings)
    async with serve(app) as addr:
        yield Running(addr, app.state.gateway, prefix, redis.url)


async def collect(consumer: KafkaConsumer, count: int, timeout_s: float = 30) -> list[Record]:
    got: list[Record] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            got += await consumer.getmany(timeout_ms=200)
    return got


async def replay_since(addr: str, user: str, cursor: str) -> list[dict[str, Any]]:
    """What a client reconnecting with `cursor` is replayed (before `resumed`)."""
    async with connect(addr, token(user), cursor=cursor) as client:
        replayed: list[dict[str, Any]] = []
        while True:
            message = await client.recv(timeout_s=10)
            if message["type"] == "resumed":
                assert message["replayed"] == len(replayed)
                return replayed
            assert message["type"] == "event", message
            replayed.append(message)


async def verify(running: Running, sub: Subscriber, feed: Feed, cursor_before: str) -> None:
    """The verdict: exactly once live, once in the history, and a client that
    resumes from before the outage gets exactly what followed."""
    check_exactly_once(sub.events, feed.produced)
    assert sub.connects == 1 and sub.ended == [], "the gateway dropped the client"
    await asyncio.sleep(1.0)  # nothing more arrives: no late duplicate
    assert len(sub.events) == len(feed.produced)
    history = await history_event_ids(running.sessions_url, running.prefix, feed.user)
    assert history == [m["event"]["event_id"] for m in sub.events], (
        "history differs from what was pushed"
    )
    replayed = await replay_since(running.addr, feed.user, cursor_before)
    later = [m for m in sub.events if cursor_key(m["cursor"]) > cursor_key(cursor_before)]
    assert [m["event"]["event_id"] for m in replayed] == [m["event"]["event_id"] for m in later]


#: Starts producing 6 events while the broker is away; the task ends once acknowledged.
ProduceDuring = Callable[[], "asyncio.Task[int]"]
#: Takes the broker away and brings it back; returns the produce started meanwhile.
Outage = Callable[[ProduceDuring, Subscriber], Awaitable["asyncio.Task[int]"]]


async def survive(broker: PrivateKafka, redis: PrivateRedis, name: str, outage: Outage) -> None:
    """6 events before the outage, 6 during it, 6 after: the same client gets
    all 18 exactly once, and the history and a resume agree (`verify`)."""
    async with gateway(broker, redis) as running, producer(broker.bootstrap, running.prefix) as bus:
        feed = Feed(unique(name))
        async with subscribed(feed.user, running.addr) as sub:
            await publish(bus, feed.take(6))
            await sub.wait_events(6, 30)
            cursor_before = sub.cursor
            assert cursor_before is not None

            during = await outage(lambda: asyncio.create_task(publish(bus, feed.take(6))), sub)
            await asyncio.wait_for(during, 60)
            await publish(bus, feed.take(6))

            await sub.wait_events(18, 60)
            await poll_until("gateway caught up", running.consumed_all, 30)
            await verify(running, sub, feed, cursor_before)


async def test_a_hung_broker_delays_events_but_loses_and_repeats_none(
    broker: PrivateKafka, redis: PrivateRedis
) -> None:
    """SIGSTOP the broker for longer than the consumer session timeout: its
    sockets stay open and answer nothing. Events produced meanwhile wait in
    the producer; once it resumes, the same gateway delivers all of them.
    (Whether the coordinator expires the member on waking up depends on which
    comes first, its expiry timer or the member's next heartbeat: both paths
    happen, and both must lose nothing.)"""

    async def hang(produce: ProduceDuring, sub: Subscriber) -> asyncio.Task[int]:
        broker.pause()
        try:
            during = produce()
            await asyncio.sleep(SESSION_TIMEOUT_S + 3)
            assert not during.done(), "a produce was acknowledged by a stopped broker"
            assert len(sub.events) == 6
        finally:
            broker.resume()
        return during

    await survive(broker, redis, "hung-", hang)


async def test_a_crashed_broker_restarted_on_its_data_loses_and_repeats_none(
    broker: PrivateKafka, redis: PrivateRedis
) -> None:
    """SIGKILL the broker, produce while it is down, start it again on the
    same data dir: the gateway reconnects by itself and resumes from the
    group's commits; every event reaches the client exactly once."""

    async def crash(produce: ProduceDuring, sub: Subscriber) -> asyncio.Task[int]:
        broker.kill()
        during = produce()
        await asyncio.sleep(2)
        assert not during.done(), "a produce was acknowledged by a dead broker"
        killed_at = time.monotonic()
        await asyncio.to_thread(broker.start)  # same data dir, ~15 s
        back_at = time.monotonic()
        await sub.wait_events(12, 60)  # the 6 produced while it was down
        print(
            f"FIGURES Kafka broker killed ({back_at - killed_at:.1f}s down): 6 events in flight, "
            f"client current {time.monotonic() - back_at:.2f}s after the broker was back "
            "(lost and shown twice: 0, checked by verify)"
        )
        return during

    await survive(broker, redis, "crash-", crash)


async def test_bus_consumer_resumes_from_the_group_commits_after_a_broker_restart(
    broker: PrivateKafka,
) -> None:
    """KafkaEventBus itself across a crash and restart of the broker: polls
    return nothing while it is away (no error for the pump to handle), a
    commit waits for it to come back, and afterwards the member reads on from
    the group's last commit, so whatever was not committed comes again."""
    bus = KafkaEventBus(broker.bootstrap, topic_prefix=unique("fb"))
    await bus.start()
    consumer = await bus.consumer(["orders"], unique("g"))
    try:
        await bus.publish([OutgoingRecord("orders", "ord-1", b"before-%d" % n) for n in range(6)])
        before = await collect(consumer, 6)
        await consumer.commit(next_offsets(before[:3]))  # handled 3 of 6

        broker.kill()
        for _ in range(3):
            assert await consumer.getmany(timeout_ms=300) == []
        late_commit = asyncio.create_task(consumer.commit(next_offsets(before)))
        during = asyncio.create_task(bus.publish([OutgoingRecord("orders", "ord-1", b"during")]))
        await asyncio.sleep(1.0)
        assert not late_commit.done() and not during.done()

        await asyncio.to_thread(broker.start)  # same data dir
        # The commit issued meanwhile completes, or fails as a BusError when
        # the coordinator had dropped the member: never another error, never
        # stuck. Likewise the produce (acknowledged, or timed out).
        for pending in (late_commit, during):
            with contextlib.suppress(BusError):
                await asyncio.wait_for(pending, 45)
        await bus.publish([OutgoingRecord("orders", "ord-1", b"after-%d" % n) for n in range(3)])

        wire = bus.wire_name("orders")
        [partition] = {r.partition for r in before}
        committed = (await committed_offsets(broker.bootstrap, consumer.group))[(wire, partition)]
        assert committed in (3, 6)
        end = (await bus.end_offsets("orders"))[partition]
        again = await collect(consumer, end - committed)
        assert [r.offset for r in again] == list(range(committed, end))
        assert again[-1].value == b"after-2"
        await consumer.commit(next_offsets(again))
        assert await consumer.getmany(timeout_ms=500) == []
    finally:
        await consumer.stop()
        await bus.stop()


async def test_a_gateway_stops_cleanly_while_the_broker_is_down(
    broker: PrivateKafka, redis: PrivateRedis
) -> None:
    """Stopping an instance during a Kafka outage (a rolling restart, a
    scale-down) must finish and must still run every step of the shutdown:
    here, dropping the instance's session leases in Redis."""
    prefix = unique("fs")
    settings = Settings(
        bus_url=f"kafka://{broker.bootstrap}",
        sessions_url=redis.url,
        topic_prefix=prefix,
        session_key_prefix=prefix,
        instance_id=f"{prefix}-gw",
        jwt_secret=SECRET,
    )
    gateway = gateway_app(settings).state.gateway
    await gateway.start()
    probe = RedisSessionStore(redis.url, "probe", key_prefix=prefix)
    try:
        await gateway.store.add_session("someone")
        assert await probe.locate(["someone"]) == {"someone": {settings.instance_id}}

        async def fetching() -> bool:  # a member with partitions, fetching
            consumer = gateway.pump.consumer
            return consumer is not None and len(consumer.assignment()) > 0

        await poll_until("partitions assigned", fetching, 30, 0.1)
        await asyncio.sleep(0.5)
        broker.kill()  # left dead: the next test that needs it starts it again
        await asyncio.sleep(2.0)  # the consumer keeps retrying the dead broker
        await asyncio.wait_for(gateway.stop(), 60)
        # The session store was stopped too: the lease is gone at once.
        assert await probe.locate(["someone"]) == {"someone": set()}
    finally:
        await probe.stop()
