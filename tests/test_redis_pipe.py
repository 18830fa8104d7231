"""The pump's ordered, pipelined Redis connection, against real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.envelope import Envelope
from gateway.sessions.redis import RedisSessionStore
from gateway.sessions.redis_pipe import OrderedPipe, pack, supports
from orderpush_core.events import encode_event, make_event
from tests.backends import REDIS_URL, unique
from tests.processes import PrivateRedis

pytestmark = pytest.mark.redis


def test_commands_are_packed_as_resp_arrays() -> None:
    assert pack("SET", "k", b"\x00v", 5, 1.5) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    )
    with pytest.raises(TypeError):
        pack("SET", None)


def test_only_plain_tcp_urls_use_the_pipe() -> None:
    assert supports("redis://127.0.0.1:6379/0")
    assert not supports("rediss://127.0.0.1:6379/0")
    assert not supports("unix:///tmp/redis.sock")


async def test_replies_come_back_to_their_commands_in_order() -> None:
    pipe = OrderedPipe(REDIS_URL, timeout_s=5)
    key = unique("pipe")
    try:
        await pipe.connect()
        sent = [pipe.send("INCR", key) for _ in range(2000)]
        # Written at once: none waits for the one before it.
        assert [await pipe.result(f) for f in sent] == list(range(1, 2001))
        bad = pipe.send("INCR", key, "extra")  # wrong number of arguments
        after = pipe.send("GET", key)
        with pytest.raises(ResponseError):
            await pipe.result(bad)
        assert await pipe.result(after) == b"2000"
        with pytest.raises(NoScriptError):
            await pipe.call("EVALSHA", "0" * 40, 0)
    finally:
        await pipe.call("DEL", key)
        await pipe.close()


async def test_the_database_of_the_url_is_selected() -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/3"
    pipe = OrderedPipe(url, timeout_s=5)
    key = unique("pipe-db")
    client = Redis.from_url(url)
    try:
        await pipe.call("SET", key, "here")
        assert await client.get(key) == b"here"
    finally:
        await client.delete(key)
        await client.aclose()
        await pipe.close()


async def test_a_hung_redis_fails_what_is_in_flight_and_the_pipe_reconnects(
    tmp_path: Path,
) -> None:
    redis = PrivateRedis(tmp_path, persistent=False)
    redis.start()
    pipe = OrderedPipe(redis.url, timeout_s=0.5)
    try:
        assert await pipe.call("PING") == b"PONG"
        redis.pause()
        first, second = pipe.send("PING"), pipe.send("PING")
        with pytest.raises(RedisTimeoutError):
            await pipe.result(first)
        with pytest.raises(RedisTimeoutError):
            await pipe.result(second)
        with pytest.raises(RedisConnectionError):
            pipe.send("PING")  # closed: connect() first
        redis.resume()
        assert await pipe.call("PING") == b"PONG"
        redis.kill()
        with pytest.raises(RedisConnectionError):
            await pipe.call("PING")
    finally:
        await pipe.close()
        redis.stop()


def _envelope(n: int) -> Envelope:
    event = make_event("order.pending", order_id=f"o{n}", user_id="u", status="pending", version=1)
    return Envelope(event=event, raw=encode_event(event), produced_ms=0)


async def test_appends_sent_one_after_the_other_run_in_that_order() -> None:
    store = RedisSessionStore(REDIS_URL, unique("gw"), key_prefix=unique("p"))

    await store.start(lambda deliveries: None)
    try:
        replies = [await store.send_publish([_envelope(n)]) for n in range(50)]
        cursors = [(await r)[0].cursor for r in replies]
        assert [int(c.split("-")[1]) for c in cursors] == list(range(1, 51))
    finally:
        await store.stop()


async def test_an_append_after_redis_lost_its_scripts_loads_them_and_goes_through(
    tmp_path: Path,
) -> None:
    """Redis restarted with the same data but an empty script cache (SCRIPT
    FLUSH stands for it): the pipelined append gets NOSCRIPT, loads the
    script and is sent again, once."""
    redis = PrivateRedis(tmp_path, persistent=False)
    redis.start()
    store = RedisSessionStore(redis.url, unique("gw"), key_prefix=unique("p"))
    await store.start(lambda deliveries: None)
    client = Redis.from_url(redis.url)
    try:
        first = await (await store.send_publish([_envelope(1)]))
        await client.script_flush()
        second = await (await store.send_publish([_envelope(2)]))
        assert [d.cursor.split("-")[1] for d in first + second] == ["1", "2"]
        history = await store.history_since("u", "0-0")
        assert history is not None and [d.event.order_id for d in history] == ["o1", "o2"]
    finally:
        await client.aclose()
        await store.stop()
        redis.stop()
