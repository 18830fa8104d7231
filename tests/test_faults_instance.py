"""A gateway instance killed (SIGKILL) or stopped (SIGTERM) while events flow.

Two `orderpush gateway` processes share the consumer group on a private
Kafka broker of this module (scripts/kafka/server.properties.in lets
consumers use a short session timeout, as a production broker should be set
up) and the session map on the shared Redis (a unique key prefix). One of
them is killed or stopped mid-stream; its clients reconnect to the survivor
with their last cursor.

- SIGKILL: the survivor takes over the dead instance's partitions once the
  group coordinator expires it (ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS), and the
  dead instance's session leases run out on their own.
- SIGTERM: the instance drains: /readyz says 503 at once, it leaves the
  group before it closes anything (its partitions move while it still
  serves), then closes its sockets with 1012 spread over the drain window,
  each telling its client when to come back.

Each test prints a FIGURES line (events in flight, lost, shown twice, time
until every client was current): `pytest tests/test_faults_instance.py -s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.drain import retry_after_ms
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.events import TOPIC_OF_TYPE, TOPICS
from tests.backends import REDIS_URL, unique
from tests.faults import (
    SECRET,
    Feed,
    Subscriber,
    check_exactly_once,
    committed_offsets,
    figures,
    poll_until,
    producer,
    publish,
)
from tests.harness import Process, cluster
from tests.processes import PrivateKafka

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

LEASE_TTL_S = 3.0
#: The gateways' Kafka session timeout (the broker of this module allows it).
SESSION_TIMEOUT_MS = 3000
DRAIN_WINDOW_S = 3.0
ROUNDS = 60  # one event per user per round
ROUND_S = 0.1
PARTITIONS = 4 * len(TOPICS)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path_factory.mktemp("kafka"))
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


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


async def stats(process: Process, path: str = "/api/stats") -> dict[str, object]:
    async with httpx.AsyncClient(timeout=5) as http:
        # /api/stats is on the admin listener (the public port answers 404).
        body: dict[str, object] = (await http.get(process.admin + path)).json()
        return body


async def readyz(process: Process) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(process.http + "/readyz")
        return answer.status_code, answer.json()


#: Does the fault to the victim (the survivor given to look at).
Fault = Callable[[Process, Process], Awaitable[None]]


async def two_gateways_and_a_fault(
    tmp_path: Path, broker: PrivateKafka, name: str, fault: Fault, check: Callable[..., None]
) -> None:
    prefix = unique("fi")
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{broker.bootstrap}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
        "ORDERPUSH_LEASE_TTL_S": str(LEASE_TTL_S),
        "ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "ORDERPUSH_DRAIN_WINDOW_S": str(DRAIN_WINDOW_S),
    }
    with cluster() as running:
        victim, survivor = (
            running.start(name, ["gateway", "--instance-id", name], env, tmp_path)
            for name in ("gw-victim", "gw-survivor")
        )
        for process in (victim, survivor):
            await asyncio.to_thread(running.wait_healthy, process)

        async with leftovers_removed(prefix), producer(broker.bootstrap, prefix) as bus:
            await flow_with_fault(bus, broker, prefix, victim, survivor, name, fault, check)


async def flow_with_fault(
    bus: KafkaEventBus,
    broker: PrivateKafka,
    prefix: str,
    victim: Process,
    survivor: Process,
    name: str,
    fault: Fault,
    check: Callable[..., None],
) -> None:
    # Clients of the victim fall back to the survivor; the survivor's stay put.
    on_victim = [Feed(f"v{n}-{prefix}") for n in range(8)]
    on_survivor = [Feed(f"s{n}-{prefix}") for n in range(2)]
    # They drop nothing themselves: every repeat the server sent would count.
    subscribers = [Subscriber(f.user, [victim.addr, survivor.addr]) for f in on_victim]
    subscribers += [Subscriber(f.user, [survivor.addr]) for f in on_survivor]
    feeds = on_victim + on_survivor
    produced_at: dict[str, float] = {}
    for subscriber in subscribers:
        subscriber.start()
    sessions = RedisSessionStore(REDIS_URL, "probe", key_prefix=prefix)
    try:
        for subscriber in subscribers:
            await subscriber.wait_ready()

        async def produce() -> None:
            for _ in range(ROUNDS):
                events = [feed.next() for feed in feeds]
                await publish(bus, events)
                acked = time.monotonic()
                produced_at.update((e.event_id, acked) for e in events)
                await asyncio.sleep(ROUND_S)

        flow = asyncio.create_task(produce(), name="producer")
        try:
            # The fault comes once both instances consumed part of the flow,
            # i.e. each owns some of the partitions.
            for process in (victim, survivor):
                await poll_until(
                    f"{process.name} consumes", lambda p=process: _consumed(p), 20, 0.1
                )
            where = await sessions.locate([f.user for f in on_victim])
            assert all(holders == {"gw-victim"} for holders in where.values()), where
            fault_at = time.monotonic()
            await fault(victim, survivor)
            assert not flow.done(), "the flow ended before the fault: make ROUNDS larger"
            await asyncio.wait_for(flow, ROUNDS * ROUND_S + 60)
        finally:
            flow.cancel()

        # Everything arrives, the victim's partitions included.
        for subscriber, feed in zip(subscribers, feeds, strict=True):
            await subscriber.wait_events(len(feed.produced), 30)
        await asyncio.sleep(1.0)  # and nothing more: no late duplicates
        for subscriber, feed in zip(subscribers, feeds, strict=True):
            check_exactly_once(subscriber.events, feed.produced)
            assert subscriber.snapshots == 1, f"{feed.user} lost its history: {subscriber.ended}"
        for subscriber in subscribers[: len(on_victim)]:
            assert subscriber.connects == 2 and subscriber.resumes == 1, subscriber.ended
            assert [addr for addr, _ in subscriber.ended] == [victim.addr]
        for subscriber in subscribers[len(on_victim) :]:
            assert subscriber.connects == 1 and subscriber.ended == []
            # Redeliveries after the takeover were dropped by the server.
            assert subscriber.stale == []
        check(subscribers[: len(on_victim)], fault_at)

        where = await sessions.locate([f.user for f in feeds])
        assert all(holders == {"gw-survivor"} for holders in where.values()), where

        # The survivor took over every partition and committed all of it.
        ends = {}
        for topic in {TOPIC_OF_TYPE[e.type] for f in feeds for e in f.produced}:
            for partition, end in (await bus.end_offsets(topic)).items():
                ends[(bus.wire_name(topic), partition)] = end

        async def all_committed() -> bool:
            committed = await committed_offsets(broker.bootstrap, prefix + "gateway")
            return all(committed.get(tp, -1) == end for tp, end in ends.items() if end > 0)

        await poll_until("the survivor committed every partition", all_committed, 15)
        print(figures(name, subscribers, feeds, produced_at, fault_at).line())
    finally:
        for subscriber in subscribers:
            await subscriber.stop()
        await sessions.stop()


async def _consumed(process: Process) -> bool:
    consumed = (await stats(process))["events_consumed"]
    assert isinstance(consumed, int | float)
    return consumed > 0


async def test_clients_of_a_killed_instance_resume_on_the_survivor_exactly_once(
    tmp_path: Path, broker: PrivateKafka
) -> None:
    async def kill(victim: Process, survivor: Process) -> None:
        victim.popen.kill()
        await asyncio.to_thread(victim.popen.wait, 10)

    def check(on_victim: list[Subscriber], fault_at: float) -> None:
        for subscriber in on_victim:
            assert subscriber.ended[0][1] == "closed 1006", subscriber.ended

    await two_gateways_and_a_fault(tmp_path, broker, "SIGKILL gateway", kill, check)


async def test_a_stopped_instance_drains_its_sockets_over_the_window_and_loses_nothing(
    tmp_path: Path, broker: PrivateKafka
) -> None:
    survivor_took_all_while_victim_ran = False

    async def terminate(victim: Process, survivor: Process) -> None:
        nonlocal survivor_took_all_while_victim_ran
        victim.popen.send_signal(signal.SIGTERM)
        # Not ready at once (a load balancer stops sending it clients).
        status, body = await readyz(victim)
        assert status == 503 and body["draining"] is True, body

        # It left the group before closing anything: the survivor holds every
        # partition while the victim is still up, draining its sockets.
        async def survivor_holds_all() -> bool:
            _, body = await readyz(survivor)
            return body["partitions"] == PARTITIONS

        await poll_until("the survivor holds every partition", survivor_holds_all, 15, 0.1)
        survivor_took_all_while_victim_ran = victim.popen.poll() is None
        code = await asyncio.to_thread(victim.popen.wait, 30)
        assert code == -signal.SIGTERM, victim.log()

    def check(on_victim: list[Subscriber], fault_at: float) -> None:
        assert survivor_took_all_while_victim_ran
        closes = []
        for subscriber in on_victim:
            assert subscriber.ended[0][1] == "closed 1012", subscriber.ended
            assert retry_after_ms(subscriber.close_reasons[0]) is not None
            closes.append(subscriber.ended_at[0] - fault_at)
        # Spread over the window, not all at once (8 sockets, one per 3/8 s
        # slice): the first and the last close are far apart.
        assert max(closes) - min(closes) >= DRAIN_WINDOW_S / 3, sorted(closes)
        print(f"drain closes after SIGTERM (s): {[round(c, 2) for c in sorted(closes)]}")

    await two_gateways_and_a_fault(tmp_path, broker, "SIGTERM gateway", terminate, check)
