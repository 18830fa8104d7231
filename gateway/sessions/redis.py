"""The Redis session store, for gateway instances on many machines.

Keys, under `key_prefix` (a user's keys share the hash tag `{user}`, so they sit
in one Redis Cluster slot and one script may touch them together):

    PREFIX:{user}:h             stream: the replay history, entry ids are the cursors
    PREFIX:{user}:v             hash: order_id -> OrderState JSON (the order view)
    PREFIX:{user}:s             sorted set: instance_id -> lease expiry (epoch ms)
    PREFIX:{user}:e:EVENT_ID    string: marks an appended event, to skip redeliveries
    PREFIX:instance:ID          pub/sub channel of one gateway instance

Routing between instances is pub/sub, so at most once: what is sent while an
instance is reconnecting is lost. `redis_routes.RouteListener` reports every
such gap, and the gateway refills it from the history (the safety net).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Collection, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.events import PoisonEvent, decode_event
from gateway.sessions.base import (
    ZERO_CURSOR,
    DeliverFn,
    Delivery,
    GapFn,
    Incoming,
    OrderState,
    SessionStoreError,
    Snapshot,
    cursor_key,
)
from gateway.sessions.redis_routes import RouteListener, encode_routes, epoch_ms

log = logging.getLogger(__name__)

#: How long an appended event id is remembered. Redeliveries come from Kafka
#: offsets not yet committed, i.e. within minutes; a day leaves a wide margin.
DEDUPE_TTL_S: Final = 86_400.0
#: Bounded backoff of the pub/sub reader after losing its connection.
POOL_MAX_CONNECTIONS: Final = 64
POOL_WAIT_S: Final = 10.0
SOCKET_TIMEOUT_S: Final = 5.0

# Appends one event. Atomic, so the dedupe marker, the history entry and the
# view never disagree. KEYS: marker, stream, view. ARGV: attempt token, marker
# TTL (s), history max, raw, produced_ms, order_id ('' = no view update),
# version, OrderState JSON, traceparent ('' = none).
_APPEND_LUA: Final = """
local marker = redis.call('GET', KEYS[1])
if marker then
  -- Appended before: by our own pipeline retried after a lost reply (same
  -- token: still new to the caller), or a redelivery (another token). Either
  -- way the entry keeps its cursor and is routed again; sockets drop what
  -- they already have, and those that missed it (a crash between append and
  -- route) get it now.
  local token, id = string.match(marker, '^(%S+) (.+)$')
  if token == ARGV[1] then return {id, 1} end
  return {id, 0}
end
local excess = redis.call('XLEN', KEYS[2]) + 1 - tonumber(ARGV[3])
local trimmed = excess > 0 and redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', excess)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*',
                      'raw', ARGV[4], 'produced_ms', ARGV[5], 'tp', ARGV[9])
if trimmed then
  -- Trimming leaves max-deleted-entry-id alone (only XDEL sets it): record the
  -- newest trimmed id there, so history_since knows which cursors are lost.
  redis.call('XSETID', KEYS[2], id, 'MAXDELETEDID', trimmed[#trimmed][1])
end
if ARGV[6] ~= '' then
  local known = redis.call('HGET', KEYS[3], ARGV[6])
  if not known or cjson.decode(known)['version'] < tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[3], ARGV[6], ARGV[8])
  end
end
-- Marked last: if a call above fails, a retry appends the event instead of skipping it.
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. id, 'EX', ARGV[2])
return {id, 1}
"""
_APPEND_SHA: Final = hashlib.sha1(_APPEND_LUA.encode()).hexdigest()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redact_url(url: str) -> str:
    """The URL without its password (user info or `?password=`), fit for logs."""
    parts = urlsplit(url)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        hidden = [(name, "***" if name == "password" else value) for name, value in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts)


class RedisSessionStore:
    def __init__(
        self,
        url: str,
        instance_id: str,
        *,
        key_prefix: str = "orderpush",
        history_max: int = 1000,
        lease_ttl_s: float = 30.0,
        dedupe_ttl_s: float = DEDUPE_TTL_S,
    ) -> None:
        self.url = redact_url(url)
        if "{" in key_prefix or "}" in key_prefix:
            raise SessionStoreError(f"key prefix {key_prefix!r} must not contain braces")
        if history_max < 1 or lease_ttl_s <= 0 or dedupe_ttl_s <= 0:
            raise SessionStoreError("history_max, lease_ttl_s and dedupe_ttl_s must be positive")
        try:
            # Lazy: nothing connects before start(); a malformed URL fails here.
            # A burst of handshakes must queue for a connection, not fail: the
            # default pool raises once its 100 connections are busy.
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=POOL_MAX_CONNECTIONS,
                timeout=POOL_WAIT_S,
                # A hung Redis (or a silent partition) must fail a command,
                # not block the pump and every handshake forever; the pump
                # retries, so a timeout loses nothing.
                socket_timeout=SOCKET_TIMEOUT_S,
                socket_connect_timeout=SOCKET_TIMEOUT_S,
                # Named so `CLIENT LIST` shows which instance a connection belongs to.
                client_name=f"orderpush:{instance_id}",
                # from_url's connections do not retry at all by default, so the
                # first command after a Redis restart fails on a stale pooled
                # connection. Retrying is safe: leases and reads are idempotent,
                # the append script recognises its own attempt token.
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=3),
            )
            self._redis = Redis.from_pool(pool)  # the client owns (and closes) the pool
        except ValueError as exc:
            raise SessionStoreError(f"sessions URL {self.url!r}: {exc}") from None
        self.instance_id = instance_id
        self.history_max = history_max
        self.lease_ttl_s = lease_ttl_s
        self._prefix = key_prefix
        self._dedupe_ttl_s = max(1, round(dedupe_ttl_s))
        self._listener: RouteListener | None = None
        self._local_users: set[str] = set()
        self._stopped = False
        #: Redis round trips (pipelines and single commands) made so far.
        self.round_trips = 0
        #: Events appended to a history (duplicates excluded).
        self.published_events = 0
        #: Batches that could not be routed to another instance.
        self.route_failures = 0

    @property
    def bad_messages(self) -> int:
        """Routed messages (or events in them) dropped as undecodable."""
        return self._listener.bad_messages if self._listener is not None else 0

    @property
    def gaps(self) -> int:
        """Times the subscription dropped and came back (routes may be lost)."""
        return self._listener.gaps if self._listener is not None else 0

    # -- keys --------------------------------------------------------------

    def _key(self, user_id: str, kind: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:{kind}"

    def _instance_channel(self, instance_id: str) -> str:
        return f"{self._prefix}:instance:{instance_id}"

    async def _execute(self, pipe: Pipeline, *, raise_on_error: bool = True) -> list[Any]:
        self.round_trips += 1
        return await pipe.execute(raise_on_error=raise_on_error)

    # -- lifecycle ---------------------------------------------------------

    async def start(self, deliver: DeliverFn, on_gap: GapFn | None = None) -> None:
        self._listener = RouteListener(
            self._redis, self._instance_channel(self.instance_id), self.url, deliver, on_gap
        )
        try:
            self.round_trips += 1
            await self._redis.script_load(_APPEND_LUA)
            await self._listener.start()
        except (RedisError, OSError) as exc:
            raise SessionStoreError(f"cannot reach Redis at {self.url}: {exc}") from exc

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._listener is not None:
            await self._listener.stop()
        if self._local_users:
            pipe = self._redis.pipeline(transaction=False)
            for user_id in self._local_users:
                pipe.zrem(self._key(user_id, "s"), self.instance_id)
            try:
                await self._execute(pipe)
            except RedisError as exc:
                # The leases expire on their own; stopping must not fail for this.
                log.warning("sessions: could not drop leases on %s: %s", self.url, exc)
            self._local_users.clear()
        await self._redis.aclose()

    # -- publish -----------------------------------------------------------

    async def publish(self, items: Sequence[Incoming]) -> list[Delivery]:
        # The same event twice in one batch: keep the first, like a redelivery.
        unique: dict[str, Incoming] = {}
        for item in items:
            unique.setdefault(item.event.event_id, item)
        batch = list(unique.values())
        if not batch:
            return []
        users = list(dict.fromkeys(item.event.user_id for item in batch))
        appended, holders = await self._append(batch, users)
        deliveries = [
            Delivery(
                item.event.user_id,
                _str(entry[0]),
                item.event,
                item.raw,
                item.produced_ms,
                item.traceparent,
            )
            for item, entry in zip(batch, appended, strict=True)
        ]
        self.published_events += sum(int(entry[1]) for entry in appended)
        await self._route(deliveries, dict(zip(users, holders, strict=True)))
        return deliveries

    async def _append(
        self, batch: list[Incoming], users: list[str]
    ) -> tuple[list[list[Any]], list[list[bytes]]]:
        """Round trip 1: run the append script per event and read the leases."""
        token = uuid.uuid4().hex  # one per call, so our own retries are not "duplicates"
        now_ms = epoch_ms()
        for attempt in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for item in batch:
                self._queue_append(pipe, item, token)
            for user_id in users:
                pipe.zrangebyscore(self._key(user_id, "s"), f"({now_ms}", "+inf")
            results = await self._execute(pipe, raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                # Script cache flushed (Redis restarted): load it and run again;
                # the token makes already-appended events come back, not vanish.
                self.round_trips += 1
                await self._redis.script_load(_APPEND_LUA)
                continue
            break
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results[: len(batch)], results[len(batch) :]

    def _queue_append(self, pipe: Pipeline, item: Incoming, token: str) -> None:
        event = item.event
        view_args: tuple[str, int, bytes] = ("", 0, b"")
        if event.is_order_event and event.status is not None and event.version is not None:
            state = OrderState(event.order_id, event.status, event.version, event.occurred_at)
            view_args = (event.order_id, event.version, msgspec.json.encode(state))
        user_id = event.user_id
        pipe.evalsha(
            _APPEND_SHA,
            3,
            self._key(user_id, f"e:{event.event_id}"),
            self._key(user_id, "h"),
            self._key(user_id, "v"),
            token,
            self._dedupe_ttl_s,
            self.history_max,
            item.raw,
            item.produced_ms,
            *view_args,
            item.traceparent or "",
        )

    async def _route(self, deliveries: list[Delivery], holders: dict[str, list[bytes]]) -> None:
        """Round trip 2: one PUBLISH per other instance holding users of the batch."""
        outgoing: dict[str, list[Delivery]] = {}
        for d in deliveries:
            for member in holders[d.user_id]:
                instance = _str(member)
                if instance != self.instance_id:
                    outgoing.setdefault(instance, []).append(d)
        if not outgoing:
            return
        pipe = self._redis.pipeline(transaction=False)
        for instance, routed_batch in outgoing.items():
            pipe.publish(self._instance_channel(instance), encode_routes(routed_batch))
        try:
            await self._execute(pipe)
        except RedisError as exc:
            # Not raised: the events are in the histories already, and a caller
            # retrying would see them skipped as duplicates. Clients resume.
            self.route_failures += 1
            log.warning("sessions: routing to %s failed: %s", sorted(outgoing), exc)

    # -- history and view --------------------------------------------------

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        try:
            key = cursor_key(cursor)
        except ValueError:
            return None
        stream = self._key(user_id, "h")
        # One transaction: trimming between the two reads would open a silent gap.
        pipe = self._redis.pipeline(transaction=True)
        pipe.xinfo_stream(stream)
        pipe.xrange(stream, min=f"({cursor}", max="+")
        info, entries = await self._execute(pipe, raise_on_error=False)
        if isinstance(info, ResponseError):
            if "no such key" not in str(info).lower():
                raise info
            return [] if key == (0, 0) else None
        if isinstance(entries, ResponseError):
            return None  # a cursor Redis cannot parse (e.g. beyond 64 bits)
        oldest_served = cursor_key(_str(info["max-deleted-entry-id"]))
        newest = cursor_key(_str(info["last-generated-id"]))
        if key < oldest_served or key > newest:
            return None
        history: list[Delivery] = []
        for entry_id, fields in entries:
            try:
                event = decode_event(fields[b"raw"])
            except PoisonEvent as exc:  # appended by an older, laxer version
                log.warning("sessions: skipping bad history entry %s: %s", entry_id, exc)
                continue
            produced_ms = int(fields[b"produced_ms"])
            traceparent = _str(fields[b"tp"]) if fields.get(b"tp") else None
            history.append(
                Delivery(user_id, _str(entry_id), event, fields[b"raw"], produced_ms, traceparent)
            )
        return history

    async def snapshot(self, user_id: str) -> Snapshot:
        # MULTI/EXEC: no append can land between reading the view and the cursor.
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._key(user_id, "v"))
        pipe.xrevrange(self._key(user_id, "h"), max="+", min="-", count=1)
        view, last = await self._execute(pipe)
        orders = sorted(
            (msgspec.json.decode(raw, type=OrderState) for raw in view.values()),
            key=lambda order: order.order_id,
        )
        cursor = _str(last[0][0]) if last else ZERO_CURSOR
        return Snapshot(orders, cursor)

    # -- session leases ----------------------------------------------------

    async def add_session(self, user_id: str) -> None:
        await self.refresh_leases([user_id])

    async def remove_session(self, user_id: str) -> None:
        self._local_users.discard(user_id)
        self.round_trips += 1
        await self._redis.zrem(self._key(user_id, "s"), self.instance_id)

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        if not user_ids:
            return
        now_ms = epoch_ms()
        ttl_ms = max(1, round(self.lease_ttl_s * 1000))
        # No MULTI: the users' keys may sit in different cluster slots, and
        # each user's commands stand on their own.
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            leases = self._key(user_id, "s")
            pipe.zadd(leases, {self.instance_id: now_ms + ttl_ms})
            pipe.zremrangebyscore(leases, "-inf", now_ms)  # dead instances' leases
            # The key outlives every lease in it and then vanishes by itself:
            # set a TTL on a new key, else only ever extend it (another
            # instance may hold a longer lease).
            pipe.pexpire(leases, ttl_ms, nx=True)
            pipe.pexpire(leases, ttl_ms, gt=True)
        await self._execute(pipe)
        self._local_users.update(user_ids)

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        users = list(user_ids)
        if not users:
            return {}
        now_ms = epoch_ms()
        pipe = self._redis.pipeline(transaction=False)
        for user_id in users:
            pipe.zrangebyscore(self._key(user_id, "s"), f"({now_ms}", "+inf")
        results = await self._execute(pipe)
        return {
            user_id: {_str(member) for member in members}
            for user_id, members in zip(users, results, strict=True)
        }
