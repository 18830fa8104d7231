"""Deliveries routed to one gateway instance over Redis pub/sub.

Pub/sub is at most once: whatever is published while the subscription is
down is gone. The listener therefore reports every drop it sees (its own
resubscriptions, and the reconnects redis-py makes silently) as a gap, with
the time it was noticed, and the gateway refills its sockets from the users'
histories.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.envelope import Envelope
from gateway.sessions.base import DeliverFn, Delivery, GapFn, cursor_key
from orderpush_core.events import PoisonEvent, decode_event
from orderpush_core.retry import Backoff

log = logging.getLogger(__name__)

RECONNECT_MIN_S: Final = 0.2
RECONNECT_MAX_S: Final = 5.0
SUBSCRIBE_TIMEOUT_S: Final = 5.0
NOT_LOST: Final = 2**62


class _Routed(msgspec.Struct, array_like=True, frozen=True):
    """One delivery on its way to another instance (msgpack: raw stays bytes)."""

    user_id: str
    cursor: str
    raw: bytes
    produced_ms: int
    traceparent: str | None = None


_route_encoder: Final = msgspec.msgpack.Encoder()
_route_decoder: Final = msgspec.msgpack.Decoder(list[_Routed])


def encode_routes(deliveries: Sequence[Delivery]) -> bytes:
    """One message carrying many deliveries for one instance."""
    return _route_encoder.encode(
        [
            _Routed(
                user_id=d.user_id,
                cursor=d.cursor,
                raw=d.raw,
                produced_ms=d.produced_ms,
                traceparent=d.traceparent,
            )
            for d in deliveries
        ]
    )


def epoch_ms() -> int:
    # Lease scores use the writer's clock and are read with the reader's: clock
    # skew between instances only shifts a lease by the skew, tiny next to its TTL.
    return int(time.time() * 1000)


async def _close_quietly(pubsub: PubSub) -> None:
    close: Callable[[], Awaitable[None]] = pubsub.aclose  # untyped in redis-py
    try:
        await close()
    except (RedisError, OSError) as exc:
        log.debug("sessions: closing pub/sub: %s", exc)


class RouteListener:
    """Subscribes to one instance's channel and hands what arrives to `deliver`."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        url: str,
        deliver: DeliverFn,
        on_gap: GapFn | None,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self.url = url
        self._deliver: DeliverFn | None = deliver
        self._on_gap = on_gap
        self._reader: asyncio.Task[None] | None = None
        #: Routed messages (or events in them) dropped as undecodable.
        self.bad_messages = 0
        #: Times the subscription dropped and came back (routes may be lost).
        self.gaps = 0

    async def start(self) -> None:
        """Subscribe (confirmed by the server before this returns), then listen."""
        pubsub = await self._subscribe()
        self._reader = asyncio.create_task(self._read_loop(pubsub), name=f"routes-{self._channel}")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _subscribe(self) -> PubSub:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            # Wait for the server's confirmation: anything routed to us once
            # start() has returned must reach the reader.
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
            while True:
                message = await pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message["type"] == "subscribe":
                    # redis-py reconnects and resubscribes a pub/sub connection
                    # by itself (the pool's retry policy), silently: hear of it,
                    # since whatever was routed meanwhile is lost.
                    if pubsub.connection is not None:
                        pubsub.connection.register_connect_callback(self._on_pubsub_reconnect)
                    return pubsub
                if time.monotonic() >= deadline:
                    raise RedisTimeoutError(f"no confirmation for SUBSCRIBE {self._channel}")
        except BaseException:
            await _close_quietly(pubsub)
            raise

    async def _read_loop(self, pubsub: PubSub | None) -> None:
        """Hand routed batches to `deliver` until cancelled, resubscribing
        with a bounded backoff whenever the connection is lost."""
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        lost_at_ms = NOT_LOST
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                        log.info("sessions: resubscribed to %s", self._channel)
                        backoff.reset()
                        self._report_gap(lost_at_ms)
                        lost_at_ms = NOT_LOST
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._on_message(message["data"])
                except (RedisError, OSError) as exc:
                    log.warning(
                        "sessions: pub/sub on %s lost (%s), retrying in %.1f s",
                        self.url,
                        exc,
                        backoff.delay_s,
                    )
                # However the listening ended, routes may be lost from now on.
                lost_at_ms = min(lost_at_ms, epoch_ms())
                if pubsub is not None:
                    await _close_quietly(pubsub)
                    pubsub = None
                await backoff.wait()
        finally:
            if pubsub is not None:  # cancelled by stop(): unsubscribe now
                await _close_quietly(pubsub)

    def _on_pubsub_reconnect(self, connection: object) -> None:
        log.warning("sessions: pub/sub on %s reconnected; routes may be lost", self.url)
        self._report_gap(epoch_ms())

    def _report_gap(self, lost_at_ms: int) -> None:
        """Routes published while we were away are gone: say since when."""
        self.gaps += 1
        if self._on_gap is not None:
            try:
                self._on_gap(lost_at_ms)
            except Exception:
                log.exception("sessions: gap callback failed")

    def _on_message(self, data: bytes) -> None:
        try:
            routed = _route_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self.bad_messages += 1
            log.warning("sessions: undecodable message on %s: %s", self._channel, exc)
            return
        batch: list[Delivery] = []
        for item in routed:
            try:
                event = decode_event(item.raw)
                cursor_key(item.cursor)
                # A connection never receives another user's event, even from a bug.
                if event.user_id != item.user_id:
                    raise ValueError(f"event of {event.user_id!r} routed to {item.user_id!r}")
            except (PoisonEvent, ValueError) as exc:
                self.bad_messages += 1
                log.warning("sessions: bad delivery on %s: %s", self._channel, exc)
                continue
            envelope = Envelope(
                event=event,
                raw=item.raw,
                produced_ms=item.produced_ms,
                traceparent=item.traceparent,
            )
            batch.append(Delivery(user_id=item.user_id, cursor=item.cursor, envelope=envelope))
        if batch and self._deliver is not None:
            try:
                self._deliver(batch)
            except Exception:  # the reader must outlive a faulty callback
                log.exception("sessions: deliver callback failed")
