"""Protocol-speaking WebSocket clients that record what they receive.

Each `LoadClient` is one logical connection of one user: it authenticates
with the first message (offering the `orderpush.v1` subprotocol), waits for
`welcome` and `snapshot`, then hands every event frame to the ledger with its
arrival time. When the server closes it (1012 on a restart, 4009 when it was
too slow...) it reconnects, to the next gateway in the list, with the last
cursor it saw, as the protocol asks of clients; what it missed is then
replayed, or counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from loadtest.ledger import ConnectionLog, Ledger, Received

#: A cursor's parts, `<epoch>-<seq>` (docs/protocol.md).
CursorKey = tuple[int, int]


def _cursor_key(cursor: str | None) -> CursorKey | None:
    epoch, sep, seq = (cursor or "").partition("-")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        return None
    return int(epoch), int(seq)


def cursor_after(cursor: str | None, last: str | None) -> bool:
    """True unless both are cursors and `cursor` is not after `last`."""
    new, held = _cursor_key(cursor), _cursor_key(last)
    return new is None or held is None or new > held


SUBPROTOCOL: Final = Subprotocol("orderpush.v1")
#: Close codes after which reconnecting cannot help (docs/protocol.md).
NO_RECONNECT: Final = frozenset({1000, 1009, 4001, 4003})
RECONNECT_DELAY_MAX_S: Final = 2.0


class _Data(msgspec.Struct):
    loadtest_sent_ns: int | None = None


class _Event(msgspec.Struct):
    event_id: str
    type: str
    order_id: str
    user_id: str
    version: int | None = None
    data: _Data = msgspec.field(default_factory=_Data)


class _Frame(msgspec.Struct):
    type: str
    cursor: str | None = None
    event: _Event | None = None
    user_id: str | None = None
    code: str | None = None
    message: str | None = None


_decoder: Final = msgspec.json.Decoder(_Frame)


class HandshakeFailed(Exception):
    """The connection did not get as far as welcome + snapshot/resumed."""


def failure_reason(exc: BaseException) -> str:
    """A short, countable name for why a connection could not be opened."""
    if isinstance(exc, HandshakeFailed):
        return str(exc)
    if isinstance(exc, InvalidStatus):
        return f"http {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return f"closed {code}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, InvalidHandshake):
        return f"handshake: {type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"os error: {exc.strerror or type(exc).__name__}"
    return type(exc).__name__


class LoadClient:
    def __init__(
        self,
        log: ConnectionLog,
        ledger: Ledger,
        token: str,
        urls: Sequence[str],
        url_index: int,
        *,
        connect_timeout_s: float,
        reconnect: bool,
        max_reconnects: int,
    ) -> None:
        self.log = log
        self.ledger = ledger
        self.token = token
        self.urls = tuple(urls)
        self.url_index = url_index
        self.connect_timeout_s = connect_timeout_s
        self.reconnect = reconnect
        self.max_reconnects = max_reconnects
        self.ws: ClientConnection | None = None
        self.cursor: str | None = None
        self.opened = False
        self.failure: str | None = None
        self.connect_ms: float | None = None
        self.dropped = False
        self.reconnects = 0
        self.resumed = 0
        self.resnapshots = 0
        self.close_codes: list[int] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]

    # -- opening -------------------------------------------------------------

    async def open(self) -> bool:
        """First connection; on success a reader task keeps it going."""
        started = time.perf_counter()
        try:
            self.ws = await self._handshake(self.url, None)
        except Exception as exc:
            self.failure = failure_reason(exc)
            return False
        self.connect_ms = (time.perf_counter() - started) * 1000
        self.opened = True
        self._task = asyncio.create_task(self._run(), name=f"loadtest-client-{self.log.index}")
        return True

    async def _handshake(self, url: str, cursor: str | None) -> ClientConnection:
        ws = await connect(
            url,
            subprotocols=[SUBPROTOCOL],
            open_timeout=self.connect_timeout_s,
            close_timeout=2.0,
            compression=None,
            proxy=None,
            max_size=4 * 1024 * 1024,
            user_agent_header="orderpush-loadtest",
        )
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                auth: dict[str, Any] = {"type": "auth", "token": self.token}
                if cursor is not None:
                    auth["cursor"] = cursor
                await ws.send(json.dumps(auth))
                welcome = self._decode(await ws.recv())
                if welcome is None or welcome.type != "welcome":
                    raise HandshakeFailed(
                        f"no welcome ({welcome.type if welcome else 'bad frame'})"
                    )
                if welcome.user_id != self.log.user_id:
                    self.log.wrong_welcome(str(welcome.user_id))
                    raise HandshakeFailed("welcomed as another user")
                while True:  # a resume replays events before `resumed`
                    frame = self._decode(await ws.recv())
                    if frame is None:
                        continue
                    if frame.type == "event":
                        self._on_event(frame, time.time_ns())
                    elif frame.type in ("snapshot", "resumed"):
                        if frame.cursor:
                            self.cursor = frame.cursor
                        if cursor is not None:
                            if frame.type == "resumed":
                                self.resumed += 1
                            else:
                                self.resnapshots += 1
                        # Counted from here on; what arrived already is matched.
                        self.ledger.attach(self.log)
                        return ws
        except BaseException:
            await ws.close()
            raise

    # -- receiving -----------------------------------------------------------

    def _decode(self, raw: str | bytes) -> _Frame | None:
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            self.log.bad_frame(f"{exc}: {str(raw)[:80]!r}")
            return None

    def _on_event(self, frame: _Frame, recv_ns: int) -> None:
        event = frame.event
        if event is None:
            self.log.bad_frame("event frame without event")
            return
        if frame.cursor and event.user_id == self.log.user_id:
            # The protocol's one dedupe rule, as the JS client applies it: an
            # event whose cursor is not after the last one held is a repeat.
            if not cursor_after(frame.cursor, self.cursor):
                self.log.repeat(frame.cursor, event.event_id)
                return
            self.cursor = frame.cursor
        # (Another user's event, a server bug, is counted by the ledger and
        # never moves this user's cursor.)
        self.ledger.observe(
            self.log,
            Received(
                event.event_id,
                event.type,
                event.order_id,
                event.user_id,
                event.version,
                event.data.loadtest_sent_ns,
            ),
            recv_ns,
        )

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                recv_ns = time.time_ns()
                frame = self._decode(raw)
                if frame is not None and frame.type == "event":
                    self._on_event(frame, recv_ns)

    async def _run(self) -> None:
        """Read until stopped; reconnect with the cursor when the server closes."""
        attempts = 0
        while True:
            ws = self.ws
            assert ws is not None
            await self._read(ws)
            if self._stopping:
                return
            code = ws.close_code if ws.close_code is not None else 1006
            self.close_codes.append(code)
            if not self.reconnect or code in NO_RECONNECT:
                self.dropped = True
                return
            while not self._stopping:
                if attempts >= self.max_reconnects:
                    self.dropped = True
                    return
                attempts += 1
                delay_s = min(RECONNECT_DELAY_MAX_S, 0.05 * 2**attempts) * random.uniform(0.5, 1)
                await asyncio.sleep(delay_s)
                self.url_index += 1  # another instance, ideally
                try:
                    self.ws = await self._handshake(self.url, self.cursor)
                except Exception:
                    continue
                self.reconnects += 1
                break

    # -- closing -------------------------------------------------------------

    async def close(self) -> None:
        self._stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
