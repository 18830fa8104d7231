"""A gateway instance killed (SIGKILL) while events flow.

Two `orderpush gateway` processes share the consumer group on the shared
Kafka broker and the session map on the shared Redis (a unique topic prefix
and key prefix, as in test_distributed.py). One is killed mid-stream: its
clients reconnect to the survivor with their last cursor, the survivor takes
over the dead instance's partitions once the group coordinator expires it,
and the dead instance's session leases run out on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.bus.kafka import KafkaEventBus
from gateway.events import TOPIC_OF_TYPE
from gateway.sessions.redis import RedisSessionStore
from loadtest.harness import Process, cluster
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.faults import (
    SECRET,
    Feed,
    Subscriber,
    check_exactly_once,
    committed_offsets,
    poll_until,
    producer,
    publish,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

LEASE_TTL_S = 3.0
#: Session timeout of the gateway's Kafka consumers (gateway/bus/kafka.py).
SESSION_TIMEOUT_S = 10.0
ROUNDS = 60  # one event per user per round
ROUND_S = 0.1


@contextlib.asynccontextmanager
async def leftovers_removed(prefix: str) -> AsyncIterator[None]:
    """Delete the test's keys from the shared Redis afterwards."""
    try:
        yield
    finally:
        client = Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def events_consumed(process: Process) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        consumed: int = (await http.get(process.http + "/api/stats")).json()["events_consumed"]
        return consumed


async def test_clients_of_a_killed_instance_resume_on_the_survivor_exactly_once(
    tmp_path: Path,
) -> None:
    prefix = unique("fi")
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
        "ORDERPUSH_LEASE_TTL_S": str(LEASE_TTL_S),
    }
    with cluster() as running:
        victim, survivor = (
            running.start(name, ["gateway", "--instance-id", name], env, tmp_path)
            for name in ("gw-victim", "gw-survivor")
        )
        for process in (victim, survivor):
            await asyncio.to_thread(running.wait_healthy, process)

        async with leftovers_removed(prefix), producer(KAFKA_BOOTSTRAP, prefix) as bus:
            await run_and_kill(bus, prefix, victim, survivor)


async def run_and_kill(bus: KafkaEventBus, prefix: str, victim: Process, survivor: Process) -> None:
    # Clients of the victim fall back to the survivor; the survivor's stay put.
    on_victim = [Feed(f"v{n}-{prefix}") for n in range(4)]
    on_survivor = [Feed(f"s{n}-{prefix}") for n in range(2)]
    # They drop repeats by version, as PROTOCOL.md asks of clients: a client
    # resumes from the last cursor it saw, which need not be the newest when
    # two instances routed events of two orders at the same time.
    subscribers = [Subscriber(f.user, [victim.addr, survivor.addr], True) for f in on_victim]
    subscribers += [Subscriber(f.user, [survivor.addr], True) for f in on_survivor]
    feeds = on_victim + on_survivor
    for subscriber in subscribers:
        subscriber.start()
    sessions = RedisSessionStore(REDIS_URL, "probe", key_prefix=prefix)
    try:
        for subscriber in subscribers:
            await subscriber.wait_ready()

        async def produce() -> None:
            for _ in range(ROUNDS):
                await publish(bus, [feed.next() for feed in feeds])
                await asyncio.sleep(ROUND_S)

        flow = asyncio.create_task(produce(), name="producer")
        try:
            # Kill the victim once both instances consumed part of the flow,
            # i.e. each owns some of the partitions.
            for process in (victim, survivor):
                await poll_until(
                    f"{process.name} consumes", lambda p=process: _positive(p), 20, 0.1
                )
            where = await sessions.locate([f.user for f in on_victim])
            assert all(holders == {"gw-victim"} for holders in where.values()), where
            victim.popen.kill()
            victim.popen.wait(10)
            killed_at = time.monotonic()
            assert not flow.done(), "the flow ended before the kill: make ROUNDS larger"

            # The victim's leases run out without anyone removing them.
            async def victim_leases_gone() -> bool:
                where = await sessions.locate([f.user for f in feeds])
                return not any("gw-victim" in holders for holders in where.values())

            await poll_until("the victim's leases expire", victim_leases_gone, LEASE_TTL_S + 3)
            assert time.monotonic() - killed_at > LEASE_TTL_S / 3  # they did not vanish at once
            await asyncio.wait_for(flow, ROUNDS * ROUND_S + 60)
        finally:
            flow.cancel()

        # Everything arrives, the victim's partitions included (only the
        # survivor is left to consume them), within the session timeout.
        for subscriber, feed in zip(subscribers, feeds, strict=True):
            await subscriber.wait_events(len(feed.produced), SESSION_TIMEOUT_S + 30)
        await asyncio.sleep(1.0)  # and nothing more: no late duplicates
        for subscriber, feed in zip(subscribers, feeds, strict=True):
            check_exactly_once(subscriber.events, feed.produced, one_instance=False)
            assert subscriber.snapshots == 1, f"{feed.user} lost its history: {subscriber.ended}"
        for subscriber in subscribers[: len(on_victim)]:
            assert subscriber.connects == 2 and subscriber.resumes == 1, subscriber.ended
            assert [addr for addr, _ in subscriber.ended] == [victim.addr]
        for subscriber in subscribers[len(on_victim) :]:
            assert subscriber.connects == 1 and subscriber.ended == []
            # Redeliveries after the takeover were dropped by the server.
            assert subscriber.stale == []
        where = await sessions.locate([f.user for f in feeds])
        assert all(holders == {"gw-survivor"} for holders in where.values()), where

        # The survivor took over every partition and committed all of it.
        ends = {}
        for topic in {TOPIC_OF_TYPE[e.type] for f in feeds for e in f.produced}:
            for partition, end in (await bus.end_offsets(topic)).items():
                ends[(bus.wire_name(topic), partition)] = end

        async def all_committed() -> bool:
            committed = await committed_offsets(KAFKA_BOOTSTRAP, prefix + "gateway")
            return all(committed.get(tp, -1) == end for tp, end in ends.items() if end > 0)

        await poll_until("the survivor committed every partition", all_committed, 15)
    finally:
        for subscriber in subscribers:
            await subscriber.stop()
        await sessions.stop()


async def _positive(process: Process) -> bool:
    return await events_consumed(process) > 0
