"""One Redis connection for the pump's appends, pipelined and in order.

redis-py runs a command on whichever pooled connection is free and sends it
from inside a task (its socket timeout wraps the write), so two commands in
flight may run in either order, and a command is not on the wire until the
event loop comes round to it. The pump needs the opposite: batch N+1's
append sent while batch N's deliveries are written to the sockets (so Redis
and the gateway work at the same time), and Redis running the appends in
batch order. Here a command is written to the socket synchronously, in call
order, on one connection; Redis answers each connection in order, so the
replies are matched first in, first out (parsed by hiredis).

Errors are redis-py's, so the pump tells outages from bad records as
before: a lost connection or a reply that takes longer than `timeout_s`
fails every command in flight with `ConnectionError`/`TimeoutError` and
closes the connection (the next command opens a new one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_READ_BYTES = 1 << 16


def supports(url: str) -> bool:
    """Plain TCP URLs only (no TLS, no unix socket): others use the pool."""
    return url.startswith("redis://") and "host" in parse_url(url)


def pack(*args: Any) -> bytes:
    """A RESP array of bulk strings (str as UTF-8, int and float as text)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class OrderedPipe:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._options = parse_url(url)
        self.timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        """Open the connection if it is not open (no suspension if it is)."""
        if self._writer is not None:
            return
        async with self._connecting:
            if self._writer is not None:
                return
            options = self._options
            try:
                async with asyncio.timeout(self.timeout_s):
                    reader, writer = await asyncio.open_connection(
                        options["host"], options.get("port", 6379)
                    )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"connecting to Redis failed: {exc}") from exc
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader, writer))
            setup: list[tuple[Any, ...]] = []
            if options.get("password"):
                user = options.get("username")
                setup.append(
                    ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
                )
            if options.get("db"):
                setup.append(("SELECT", options["db"]))
            for command in setup:
                await self.call(*command)

    def send(self, *args: Any) -> asyncio.Future[Any]:
        """Write the command now; its reply completes the future. Call
        `connect()` first."""
        writer = self._writer
        if writer is None or writer.is_closing():
            raise RedisConnectionError("Redis connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        writer.write(pack(*args))
        return future

    async def result(self, future: asyncio.Future[Any]) -> Any:
        """The reply of a sent command; a reply later than `timeout_s` closes
        the connection and fails every command in flight."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            self._fail(RedisTimeoutError(f"no reply from Redis in {self.timeout_s}s"))
            raise RedisTimeoutError(f"no reply from Redis in {self.timeout_s}s") from None

    async def call(self, *args: Any) -> Any:
        await self.connect()
        return await self.result(self.send(*args))

    async def close(self) -> None:
        self._fail(RedisConnectionError("Redis connection closed"))
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _fail(self, error: Exception) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a caller may have stopped waiting

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while True:
                data = await reader.read(_READ_BYTES)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    if not self._pending:
                        raise RedisConnectionError("a reply nobody asked for")
                    future = self._pending.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        message = str(reply)
                        kind = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                        future.set_exception(kind(message))
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._writer is writer:
                error = (
                    exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
                )
                self._fail(error)
