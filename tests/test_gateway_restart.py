"""A gateway killed (SIGKILL) and started again on its address while events flow.

One `orderpush gateway` process on the shared Kafka and Redis, clients of a
few users resuming with their cursors, a producer that never stops. The
gateway is killed and a new process started at once on the same port under
the same instance id: as a static group member it takes the dead process's
place in the consumer group at once, although the dead member's session
has far longer to run. Every client gets every event once, in order
(`check_exactly_once`), with one snapshot and one resume.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from orderpush_core.events import TOPICS
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.faults import (
    SECRET,
    Feed,
    Subscriber,
    check_exactly_once,
    poll_until,
    producer,
    publish,
)
from tests.harness import Cluster, Process, cluster
from tests.test_faults_instance import leftovers_removed, stats

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 4 * len(TOPICS)
USERS = 4
ROUND_S = 0.1


async def readyz(process: Process) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(process.http + "/readyz")
        return answer.status_code, answer.json()


def gateway_env(prefix: str, session_timeout_ms: int, static: bool) -> dict[str, str]:
    return {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
        "ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS": str(session_timeout_ms),
        "ORDERPUSH_KAFKA_STATIC_MEMBERS": "on" if static else "off",
    }


@contextlib.asynccontextmanager
async def flowing(
    running: Cluster, env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[Process, list[Subscriber], list[Feed], asyncio.Event]]:
    """A gateway, its subscribed clients, and events produced every ROUND_S
    until the yielded event is set; afterwards every client must hold every
    event once, in order."""
    prefix = env["ORDERPUSH_TOPIC_PREFIX"]
    gateway = running.start("gw", ["gateway", "--instance-id", "gw-r"], env, tmp_path)
    await asyncio.to_thread(running.wait_healthy, gateway)
    feeds = [Feed(f"r{n}-{prefix}") for n in range(USERS)]
    subscribers = [Subscriber(f.user, [gateway.addr]) for f in feeds]
    stop = asyncio.Event()
    async with leftovers_removed(prefix), producer(KAFKA_BOOTSTRAP, prefix) as bus:
        for subscriber in subscribers:
            subscriber.start()
        try:
            for subscriber in subscribers:
                await subscriber.wait_ready(30)

            async def produce() -> None:
                while not stop.is_set():
                    await publish(bus, [feed.next() for feed in feeds])
                    await asyncio.sleep(ROUND_S)

            flow = asyncio.create_task(produce(), name="producer")
            try:
                await poll_until("the gateway consumes", lambda: _consumed(gateway), 30, 0.1)
                yield gateway, subscribers, feeds, stop
                stop.set()
                await asyncio.wait_for(flow, 30)
            finally:
                flow.cancel()
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                await subscriber.wait_events(len(feed.produced), 60)
            await asyncio.sleep(1.0)  # and nothing more: no late duplicates
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                check_exactly_once(subscriber.events, feed.produced)
                assert subscriber.snapshots == 1 and subscriber.resumes == 1, subscriber.ended
        finally:
            for subscriber in subscribers:
                await subscriber.stop()


async def _consumed(process: Process) -> bool:
    consumed = (await stats(process))["events_consumed"]
    assert isinstance(consumed, int | float)
    return consumed > 0


async def kill_and_restart(
    running: Cluster, gateway: Process, env: dict[str, str], tmp_path: Path
) -> Process:
    gateway.popen.kill()
    await asyncio.to_thread(gateway.popen.wait, 10)
    again = running.start(
        "gw-again", ["gateway", "--instance-id", "gw-r"], env, tmp_path, port=gateway.port
    )
    await asyncio.to_thread(running.wait_healthy, again)
    return again


async def test_a_gateway_restarted_under_its_id_takes_its_partitions_back_at_once(
    tmp_path: Path,
) -> None:
    # The dead member's session has 60 s to run: only a static member taking
    # its place is assigned within the 30 s wait below.
    env = gateway_env(unique("rs"), session_timeout_ms=60_000, static=True)
    with cluster() as running:
        async with flowing(running, env, tmp_path) as (gateway, subscribers, _, _):
            again = await kill_and_restart(running, gateway, env, tmp_path)

            async def assigned() -> bool:
                status, body = await readyz(again)
                return status == 200 and body["partitions"] == PARTITIONS

            await poll_until("the restarted gateway holds every partition", assigned, 30, 0.1)
            for subscriber in subscribers:
                await subscriber.wait_until("a resume", lambda s=subscriber: s.resumes == 1, 30)
