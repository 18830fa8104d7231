"""The WebSocket conversation at /ws (docs/protocol.md section 2).

auth -> welcome -> (replay + resumed | snapshot) -> live events, with ping,
resume and re-auth at any time. Outgoing frames all go through the
connection's queue, drained by one sender task, so their order is the order
in which they were decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.direct_frames import direct_writer
from gateway.drain import RETRY_AFTER_MAX_MS, drain_reason
from gateway.hub import Close, Connection, Frame, Hub
from gateway.metrics import GatewayMetrics
from gateway.presence import PresenceStore
from gateway.protocol import (
    SUBPROTOCOL,
    TOKEN_COOKIE,
    Auth,
    CloseCode,
    ErrorMessage,
    Ping,
    Pong,
    ProtocolError,
    Resume,
    Resumed,
    SnapshotMessage,
    Welcome,
    parse_client_message,
)
from gateway.route_leases import RouteLeases
from gateway.sessions.base import SessionHistory
from gateway.settings import Settings
from orderpush_core import limits
from orderpush_core.auth import Claims, InvalidToken, TokenVerifier
from orderpush_core.limits import Admission, KeyedBuckets, TokenBucket

log = logging.getLogger("orderpush.ws")


class ExpiryTimer:
    """Closes a connection with 4001 when its token expires. One timer per
    connection: a re-auth moves it (the previous one is cancelled, so many
    refreshes leave nothing behind), and closing the connection cancels it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._timer: asyncio.TimerHandle | None = None

    def set(self, closes_at: float) -> None:
        self.cancel()
        delay_s = max(0.0, closes_at - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._expire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def pending(self) -> bool:
        return self._timer is not None

    def _expire(self) -> None:
        self._timer = None
        self.conn.close(CloseCode.TOKEN_INVALID, "token expired")


class _Refused(Exception):
    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Conversation:
    settings: Settings
    verifier: TokenVerifier
    hub: Hub
    store: SessionHistory
    metrics: GatewayMetrics
    #: Registers sockets in the hub, with their users' route leases.
    route_leases: RouteLeases
    #: Set when the instance drains (SIGTERM): new sockets are sent elsewhere.
    draining: bool = False
    #: Awaited before a snapshot: returns once the order views are whole.
    views_ready: Callable[[], Awaitable[None]] | None = None
    #: Sockets per user across the cluster; None: not counted.
    presence: PresenceStore | None = None
    _fills: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        settings = self.settings
        self.admission = Admission(
            KeyedBuckets(settings.handshakes_per_s, settings.handshake_burst),
            settings.max_unauthenticated,
            frozenset(settings.limit_exempt_addresses),
        )

    def _limited(self, limit: str) -> None:
        self.metrics.limited.labels(limit).inc()

    async def handle(self, websocket: WebSocket) -> None:
        client = websocket.scope.get("client")
        refused = self.admission.refuse(client[0] if client else None)
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        # Refusals are sent as close codes after the upgrade (as every other
        # refusal here): the client library sees a code it can act on.
        if refused == limits.HANDSHAKE_RATE:
            self._limited(refused)
            await websocket.close(CloseCode.RATE_LIMITED, "too many handshakes from your address")
            return
        if refused == limits.UNAUTHENTICATED:
            self._limited(refused)
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "too many sockets authenticating")
            return
        if self.draining:
            # Accepted only to say so with a close code the client acts on
            # (reconnect, to another instance); a refused handshake would
            # look like an outage and be retried with a long backoff.
            self.metrics.rejected.labels("draining").inc()
            reason = drain_reason(random.randrange(RETRY_AFTER_MAX_MS))
            await websocket.close(CloseCode.SERVICE_RESTART, reason)
            return
        self.admission.unauthenticated += 1
        try:
            if not self._origin_allowed(websocket):
                raise _Refused(CloseCode.ORIGIN_NOT_ALLOWED, "origin not allowed")
            claims, cursor = await self._authenticate(websocket)
        except _Refused as refusal:
            self.metrics.rejected.labels(refusal.code.name.lower()).inc()
            await websocket.close(refusal.code, refusal.reason)
            return
        except WebSocketDisconnect:
            return
        finally:
            self.admission.unauthenticated -= 1
        await self._serve(websocket, claims, cursor)

    # -- before the conversation -----------------------------------------

    def _origin_allowed(self, websocket: WebSocket) -> bool:
        origin = websocket.headers.get("origin")
        if origin is None:
            return True  # not a browser (tools, services): nothing to protect
        if "*" in self.settings.allowed_origins or origin in self.settings.allowed_origins:
            return True
        # Same origin as the page that served the script: the Host header.
        return urlsplit(origin).netloc == websocket.headers.get("host")

    async def _authenticate(self, websocket: WebSocket) -> tuple[Claims, str | None]:
        """The token of an `auth` first message; failing that, the cookie, then
        `?token=` (docs/protocol.md's order of preference).

        With a cookie or query token at hand the server waits only
        `auth_grace_s` for an `auth` message (which takes precedence), so a
        cookie-only page is not held up for the whole auth timeout.
        """
        fallback = websocket.cookies.get(TOKEN_COOKIE) or websocket.query_params.get("token")
        wait_s = self.settings.auth_timeout_s if fallback is None else self.settings.auth_grace_s
        token, cursor = fallback, None
        try:
            # asyncio.timeout, not wait_for: no extra task per connect.
            async with asyncio.timeout(wait_s):
                data = await websocket.receive_text()
        except TimeoutError:
            if fallback is None:
                raise _Refused(CloseCode.AUTH_TIMEOUT, "no auth in time") from None
        except KeyError:  # a binary frame: receive_text finds no "text"
            raise _Refused(CloseCode.AUTH_TIMEOUT, "first message must be auth") from None
        else:
            try:
                message = parse_client_message(data)
            except ProtocolError as exc:
                reason = f"first message must be auth: {exc}"
                raise _Refused(CloseCode.AUTH_TIMEOUT, reason) from None
            if isinstance(message, Auth):
                token, cursor = message.token, message.cursor
            elif isinstance(message, Resume) and fallback is not None:
                cursor = message.cursor
            elif fallback is None:
                raise _Refused(CloseCode.AUTH_TIMEOUT, "first message must be auth")
        assert token is not None
        try:
            return await self.verifier.averify(token), cursor
        except InvalidToken as exc:
            # The reason names the check that failed, never the token itself.
            raise _Refused(CloseCode.TOKEN_INVALID, f"token invalid: {exc}"[:120]) from None

    # -- the conversation ------------------------------------------------

    async def _serve(self, websocket: WebSocket, claims: Claims, cursor: str | None) -> None:
        conn = Connection(
            claims.user_id,
            uuid.uuid4().hex,
            self.settings.send_queue_max,
            self.metrics,
            on_gap=self._schedule_fill,
        )
        if not await self._count_socket(conn):
            self._limited(limits.USER_SOCKETS)
            self.metrics.rejected.labels(CloseCode.TOO_MANY_SOCKETS.name.lower()).inc()
            limit = self.settings.max_sockets_per_user
            await websocket.close(CloseCode.TOO_MANY_SOCKETS, f"at most {limit} sockets per user")
            return
        try:
            await self._serve_counted(websocket, conn, claims, cursor)
        finally:
            await self._uncount_socket(conn)

    async def _count_socket(self, conn: Connection) -> bool:
        """Count the socket against its user's limit, cluster-wide. Fails
        open: a presence store that cannot be reached costs the limit, not
        the service."""
        if self.presence is None:
            return True
        try:
            return await self.presence.acquire(
                conn.user_id, conn.connection_id, self.settings.max_sockets_per_user
            )
        except Exception as exc:
            log.warning("socket count unavailable, admitting %s: %s", conn.connection_id, exc)
            return True

    async def _uncount_socket(self, conn: Connection) -> None:
        if self.presence is None:
            return
        try:
            await self.presence.release(conn.user_id, conn.connection_id)
        except Exception as exc:  # its lease expires on its own
            log.warning("uncounting socket %s failed: %s", conn.connection_id, exc)

    async def _serve_counted(
        self, websocket: WebSocket, conn: Connection, claims: Claims, cursor: str | None
    ) -> None:
        conn.writer = direct_writer(websocket) if self.settings.direct_frames else None
        sender = asyncio.create_task(self._send_loop(websocket, conn))
        expiry = ExpiryTimer(conn)
        expiry.set(self.verifier.closes_at(claims))
        try:
            async with self.route_leases.holding(conn):
                conn.send(Welcome(conn.user_id, conn.connection_id, self.settings.heartbeat_s))
                await self._sync(conn, cursor)
                await self._receive_loop(websocket, conn, expiry)
        except Exception:
            log.exception("connection %s failed", conn.connection_id)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            expiry.cancel()
            if conn.closing is not None:
                # Give the sender a moment to flush what precedes the close frame.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(sender), 1.0)
            sender.cancel()

    async def _sync(self, conn: Connection, cursor: str | None) -> None:
        async with conn.sync_lock:
            await self._sync_locked(conn, cursor)

    async def _sync_locked(self, conn: Connection, cursor: str | None) -> None:
        """Replay what the client missed since `cursor`, or send a snapshot."""
        conn.begin_sync(None)
        history = (
            await self.store.history_since(conn.user_id, cursor) if cursor is not None else None
        )
        if cursor is not None and history is not None:
            conn.begin_sync(cursor)
            replayed = conn.replay(history)
            conn.send(Resumed(replayed, conn.cursor or cursor))
        else:
            # The snapshot says whether the views were whole as it was read
            # (one round trip, not a marker check and then the snapshot); if
            # not, wait for their rebuild (gateway/rebuild.py) and read again.
            snapshot = await self.store.snapshot(conn.user_id)
            if not snapshot.views_whole and self.views_ready is not None:
                await self.views_ready()
                snapshot = await self.store.snapshot(conn.user_id)
            conn.seed(snapshot)
            conn.send(SnapshotMessage(snapshot.orders, snapshot.cursor))
        conn.go_live()

    def _schedule_fill(self, conn: Connection) -> None:
        task = asyncio.create_task(self.fill(conn))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def fill(self, conn: Connection) -> None:
        """Push, from the user's history, every event after the connection's
        position: a gap that outlived its wait, or routes lost while this
        instance's subscription was down.

        The position and versions stay, so the client gets only what it
        lacks, in cursor order. If the history cannot serve the position any
        more, the client is told to reconnect (1012) and resumes by itself.
        """
        async with conn.sync_lock:
            cursor = conn.cursor
            if conn.closing is not None or cursor is None:
                return
            conn.begin_fill()
            try:
                history = await self.store.history_since(conn.user_id, cursor)
            except Exception:
                log.exception("filling connection %s failed", conn.connection_id)
                history = None
            if history is None:
                conn.close(CloseCode.SERVICE_RESTART, "resume with your cursor")
            else:
                conn.replay(history, live=True)
            conn.go_live()

    async def _receive_loop(
        self, websocket: WebSocket, conn: Connection, expiry: ExpiryTimer
    ) -> None:
        bucket = TokenBucket(self.settings.rate_limit_per_s, self.settings.rate_limit_burst)
        # Each resume may replay a whole history: far fewer of those than messages.
        per_minute = self.settings.resumes_per_minute
        resumes = TokenBucket(per_minute / 60, per_minute)
        while conn.closing is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not bucket.take():
                self._limited(limits.MESSAGE_RATE)
                conn.close(CloseCode.RATE_LIMITED, "rate limited")
                return
            data = message.get("text")
            if data is None:
                conn.send(ErrorMessage("bad_message", "frames must be text (JSON)"))
                continue
            try:
                parsed = parse_client_message(data)
            except ProtocolError as exc:
                conn.send(ErrorMessage(exc.code, exc.message))
                continue
            if isinstance(parsed, Ping):
                conn.send(Pong())
            elif isinstance(parsed, Resume):
                if not self._may_resume(conn, resumes):
                    return
                await self._sync(conn, parsed.cursor)
            elif isinstance(parsed, Auth):
                await self._reauthenticate(conn, parsed, expiry)
                if parsed.cursor is not None and conn.closing is None:
                    if not self._may_resume(conn, resumes):
                        return
                    await self._sync(conn, parsed.cursor)

    def _may_resume(self, conn: Connection, resumes: TokenBucket) -> bool:
        if resumes.take():
            return True
        self._limited(limits.RESUME_RATE)
        conn.close(CloseCode.RATE_LIMITED, "too many resumes")
        return False

    async def _reauthenticate(self, conn: Connection, message: Auth, expiry: ExpiryTimer) -> None:
        """A fresh token for the same user extends the connection's life; a
        token of another user closes it (a socket never changes hands)."""
        try:
            claims = await self.verifier.averify(message.token)
        except InvalidToken as exc:
            conn.close(CloseCode.TOKEN_INVALID, f"token invalid: {exc}"[:120])
            return
        if claims.user_id != conn.user_id:
            conn.close(CloseCode.TOKEN_INVALID, "token is for another user")
            return
        expiry.set(self.verifier.closes_at(claims))

    async def _send_loop(self, websocket: WebSocket, conn: Connection) -> None:
        while True:
            item = await conn.queue.get()
            if isinstance(item, Close):
                with contextlib.suppress(Exception):
                    await websocket.close(item.code, item.reason)
                return
            assert isinstance(item, Frame)
            conn.sender_busy = True
            try:
                await websocket.send_text(item.text)
            except Exception:
                conn.close(CloseCode.GOING_AWAY)
                return
            finally:
                conn.sender_busy = False
            if item.is_event:
                self.metrics.event_frame_sent(item.produced_ms)
