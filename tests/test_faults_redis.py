"""A Redis outage: the gateway keeps reading Kafka but commits nothing it
could not hand on, and delivers all of it once Redis is back.

The gateway runs in-process on the shared Kafka broker (its own topic prefix
and consumer group) and on a private, durable redis-server (append-only file,
fsync on every write) that the test kills and starts again on the same data.
The shared Redis (6379) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.sessions.base import cursor_key
from gateway.settings import Settings
from orderpush.apps import gateway_app
from tests.backends import KAFKA_BOOTSTRAP, unique
from tests.faults import (
    SECRET,
    Feed,
    check_exactly_once,
    committed_total,
    history_event_ids,
    poll_until,
    producer,
    publish,
    subscribed,
    token,
)
from tests.harness import serve
from tests.processes import PrivateRedis
from tests.wsclient import connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis", persistent=True).running() as server:
        yield server


@dataclass
class Running:
    addr: str
    gateway: Gateway
    prefix: str
    group: str


class ReplyEatingProxy:
    """A TCP proxy in front of Redis that can lose replies: in `eat` mode it
    still forwards every command (Redis runs it) but drops what Redis
    answers, then `cut` closes every connection and refuses new ones until
    `heal`. To the gateway this is a Redis that did the work and vanished
    before saying so: the case the append script's attempt token is for."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.eating = False
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        for source, sink, replies in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(source, sink, replies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if replies and self.eating:
                    continue
                sink.write(data)
                await sink.drain()
        sink.close()

    def _close_all(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def cut(self) -> None:
        self.refusing = True
        self._close_all()

    def heal(self) -> None:
        self.eating = self.refusing = False


@contextlib.asynccontextmanager
async def gateway(redis: PrivateRedis, sessions_url: str | None = None) -> AsyncIterator[Running]:
    prefix = unique("fr")
    settings = Settings(
        bus_url=f"kafka://{KAFKA_BOOTSTRAP}",
        sessions_url=sessions_url or redis.url,
        topic_prefix=prefix,
        session_key_prefix=prefix,
        instance_id=f"{prefix}-gw",
        jwt_secret=SECRET,
    )
    app = gateway_app(settings)
    async with serve(app) as addr:
        yield Running(addr, app.state.gateway, prefix, prefix + settings.consumer_group)


async def test_events_read_while_redis_is_down_are_not_committed_and_arrive_after(
    redis: PrivateRedis,
) -> None:
    async with gateway(redis) as running, producer(KAFKA_BOOTSTRAP, running.prefix) as bus:
        feed = Feed(unique("rdown-"))

        async def committed() -> int:
            return await committed_total(KAFKA_BOOTSTRAP, running.group)

        async def read_everything() -> bool:
            return await running.gateway.pump.lag() == 0

        async with (
            subscribed(feed.user, running.addr) as sub,
            subscribed(feed.user, running.addr) as flaky,
        ):
            await publish(bus, feed.take(4))
            await sub.wait_events(4, 30)
            await flaky.wait_events(4, 30)
            await poll_until("first 4 committed", lambda: _equals(committed, 4), 15)
            cursor_before = sub.cursor
            assert cursor_before is not None
            consumed_before = running.gateway.stats()["events_consumed"]

            redis.kill()
            await publish(bus, feed.take(8))
            # The pump reads them (its position reaches the end of the log)...
            await poll_until("the pump read the new records", read_everything, 15)
            await asyncio.sleep(6.0)  # ...keeps retrying the hand-on (backoff up to 5 s)
            # ...but hands nothing on and commits nothing past what it handed on.
            assert await committed() == 4
            assert running.gateway.stats()["events_consumed"] == consumed_before
            assert len(sub.events) == len(flaky.events) == 4
            # A second socket of the user drops now: its reconnects fail
            # (no session store) until Redis is back, then it resumes.
            await flaky.drop()
            await flaky.wait_until(
                "refusal (1011) while Redis is down",
                lambda: "closed 1011" in {why for _, why in flaky.ended},
                15,
            )

            await asyncio.to_thread(redis.start)  # same data dir: the history is back
            await sub.wait_events(12, 30)
            await poll_until("all 12 committed", lambda: _equals(committed, 12), 15)
            await publish(bus, feed.take(4))  # and live as before afterwards
            await sub.wait_events(16, 30)
            await flaky.wait_events(16, 30)

            check_exactly_once(sub.events, feed.produced)
            check_exactly_once(flaky.events, feed.produced)
            await asyncio.sleep(1.0)
            assert len(sub.events) == len(flaky.events) == 16, "late duplicates"
            # This socket survived the outage: everything came live.
            assert sub.connects == 1 and sub.ended == []
            # That one got in again once Redis was back, by resuming its cursor.
            assert flaky.snapshots == 1 and flaky.resumes == 1, flaky.ended
            history = await history_event_ids(redis.url, running.prefix, feed.user)
            assert history == [m["event"]["event_id"] for m in sub.events]

        # A client that was offline since before the outage resumes exactly.
        later = [m for m in sub.events if cursor_key(m["cursor"]) > cursor_key(cursor_before)]
        async with connect(running.addr, token(feed.user), cursor=cursor_before) as client:
            replayed: list[dict[str, Any]] = []
            while (message := await client.recv(timeout_s=10))["type"] == "event":
                replayed.append(message)
            assert message["type"] == "resumed", message
        assert [m["event"]["event_id"] for m in replayed] == [m["event"]["event_id"] for m in later]


async def _equals(read: Any, expected: int) -> bool:
    value = await read()
    assert value <= expected, f"committed {value} > {expected}"
    return bool(value == expected)


async def test_appends_whose_replies_were_lost_reach_the_live_client_once(
    redis: PrivateRedis,
) -> None:
    """Redis runs a batch of appends but the replies never arrive and the
    connection drops: the pump retries the batch later (a new attempt, with
    a new token). The events are in the history already; they must still
    reach the connected client, once."""
    proxy = ReplyEatingProxy(redis.port)
    await proxy.start()
    try:
        async with (
            gateway(redis, proxy.url) as running,
            producer(KAFKA_BOOTSTRAP, running.prefix) as bus,
        ):
            feed = Feed(unique("lost-"))
            async with subscribed(feed.user, running.addr) as sub:
                await publish(bus, feed.take(3))
                await sub.wait_events(3, 30)

                proxy.eating = True
                await publish(bus, feed.take(6))

                # Redis appended them; the gateway does not know.
                async def appended() -> bool:
                    ids = await history_event_ids(redis.url, running.prefix, feed.user)
                    return len(ids) == 9

                await poll_until("the appends ran in Redis", appended, 45)
                await asyncio.sleep(0.5)
                proxy.cut()  # no reply ever; the client library's own retries fail too
                await asyncio.sleep(2.0)
                assert len(sub.events) == 3
                retries = running.gateway.pump.retries
                assert retries > 0, "the pump never saw the failure"
                proxy.heal()

                await sub.wait_events(9, 30)
                await publish(bus, feed.take(3))
                await sub.wait_events(12, 30)
                check_exactly_once(sub.events, feed.produced)
                await asyncio.sleep(1.0)
                assert len(sub.events) == 12, "late duplicates"
                history = await history_event_ids(redis.url, running.prefix, feed.user)
                assert history == [m["event"]["event_id"] for m in sub.events]
    finally:
        await proxy.stop()
