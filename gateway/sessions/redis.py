"""The Redis session store, for gateway instances on many machines.

Keys, under `key_prefix` (a user's keys share the hash tag `{user}`):

    PREFIX:{user}:h     stream: the replay history; entry ids are the cursors,
                        `<epoch>-<seq>` (epoch: Redis time in ms when this
                        history was created; seq: 1, 2, 3, ... without gaps)
    PREFIX:{user}:v     hash: order_id -> OrderState JSON (the order view)
    PREFIX:{user}:d     hash: event_id -> "ATTEMPT_TOKEN CURSOR" for the events
                        still in the history (dedupe; trimmed with it)
    PREFIX:{user}:s     set: the instances holding sockets of the user, as
                        RUN/INSTANCE_ID (RUN: 12 hex digits, new at each
                        start); written on a user's first socket on an
                        instance and removed with its last; refreshed slowly
    PREFIX:instances    sorted set: RUN/INSTANCE_ID -> lease expiry (epoch
                        ms); the one key an instance's heartbeat writes
    PREFIX:instance:ID  pub/sub channel of one gateway instance

Leases are per instance: `{user}:s` says where the user's sockets are, and an
entry counts only while its instance's score in `instances` is in the
future. A killed instance stops beating and all its entries die with it
after `lease_ttl_s`; the append script prunes them as it meets them. A beat
is one ZADD, whatever the number of users. If a beat finds the instance's
own lease gone (Redis restarted empty, or a stall longer than the TTL got it
pruned), the instance writes all its `{user}:s` entries again, in bounded
chunks, and reports a routing gap so its sockets are refilled from history.

Idle expiry: `h`, `v` and `d` get a TTL of `history_idle_s` on every append,
`s` on every write; a user without events for that long costs nothing. A
history created again starts a new epoch, so older cursors get a snapshot.

One append script call per batch (`_APPEND_LUA`) appends every event, looks
the leases up and PUBLISHes the routes, atomically: one round trip per
batch, and routes leave in cursor order. It touches many users' keys, so it
needs a single Redis (not Redis Cluster). Routing is pub/sub, so at most once
on the receiving side: `redis_routes.RouteListener` reports every dropped
subscription as a gap, and the gateway refills from history.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Collection, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.envelope import Envelope
from gateway.protocol import OrderState
from gateway.sessions.base import (
    ZERO_CURSOR,
    DeliverFn,
    Delivery,
    GapFn,
    SessionStats,
    SessionStoreError,
    Snapshot,
    cursor_key,
    make_cursor,
)
from gateway.sessions.redis_leases import RedisLeases, RoundTrips
from gateway.sessions.redis_pipe import OrderedPipe
from gateway.sessions.redis_pipe import supports as pipe_supports
from gateway.sessions.redis_routes import RouteListener, epoch_ms
from gateway.sessions.redis_views import RedisViews
from orderpush_core.batching import Batcher
from orderpush_core.events import Event, PoisonEvent, decode_event

log = logging.getLogger(__name__)

#: Default idle time after which a user's history, view and dedupe map expire.
HISTORY_IDLE_S: Final = 7 * 86_400.0
POOL_MAX_CONNECTIONS: Final = 64
POOL_WAIT_S: Final = 10.0
SOCKET_TIMEOUT_S: Final = 5.0
_batch_encoder: Final = msgspec.msgpack.Encoder()
_state_encoder: Final = msgspec.json.Encoder()
_state_decoder: Final = msgspec.json.Decoder(OrderState)

# Appends a batch. KEYS: [1] the instances zset. ARGV: [1] attempt token,
# [2] history max, [3] idle ms, [4] now ms (lease clock), [5] key prefix,
# [6] this instance, [7] the batch, msgpack: [user ids, events], each event
# [user index (1-based), event_id, raw, produced_ms, traceparent ('' = none),
# order_id ('' = no view update), version, OrderState JSON]. One packed
# argument instead of eight per event: packing thousands of arguments was
# the client's largest cost. The script names the users' keys itself (from
# the prefix), so it needs a single Redis, not a Cluster. Returns per event
# its cursor and "new" flag, then the number of instances routed to.
_APPEND_LUA: Final = r"""
local token, hmax, idle = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, prefix, me = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local batch = cmsgpack.unpack(ARGV[7])
local ids, events = batch[1], batch[2]
local users, alive, routes, targets, out = {}, {}, {}, {}, {}

local function be(n, bytes)  -- n as big-endian unsigned bytes
  local s = ''
  for _ = 1, bytes do s = string.char(n % 256) .. s; n = math.floor(n / 256) end
  return s
end
local function bin(s)  -- msgpack bin: raw stays bytes for the receiver
  local n = #s
  if n < 256 then return '\196' .. be(n, 1) .. s end
  if n < 65536 then return '\197' .. be(n, 2) .. s end
  return '\198' .. be(n, 4) .. s
end
local function arr(n)
  if n < 16 then return string.char(144 + n) end
  if n < 65536 then return '\220' .. be(n, 2) end
  return '\221' .. be(n, 4)
end

local function version_of(state)  -- an OrderState's version, without a JSON decode
  local v = string.match(state, '"version":%s*(%d+)')
  if v then return tonumber(v) end
  return cjson.decode(state)['version']
end

local function user(u)
  local st = users[u]
  if st then return st end
  local id = ids[u]
  local base = prefix .. ':{' .. id .. '}:'
  st = {id = id, h = base .. 'h', v = base .. 'v', d = base .. 'd', s = base .. 's', holders = {}}
  local last = redis.call('XREVRANGE', st.h, '+', '-', 'COUNT', 1)[1]
  if last then
    local e, q = string.match(last[1], '^(%d+)-(%d+)$')
    st.epoch, st.seq, st.len = e, tonumber(q), redis.call('XLEN', st.h)
  else
    -- A new incarnation: its epoch is Redis's clock, so it differs from any
    -- before it and their cursors are refused instead of silently misread.
    local t = redis.call('TIME')
    st.epoch = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
    st.seq, st.len = 0, 0
    redis.call('DEL', st.d)
  end
  for _, m in ipairs(redis.call('SMEMBERS', st.s)) do
    if m ~= me then
      local ok = alive[m]
      if ok == nil then
        local score = redis.call('ZSCORE', KEYS[1], m)
        ok = (score and tonumber(score) > now) or false
        alive[m] = ok
      end
      if ok then st.holders[#st.holders + 1] = m else redis.call('SREM', st.s, m) end
    end
  end
  users[u] = st
  return st
end

for _, ev in ipairs(events) do
  local st = user(ev[1])
  local eid, raw, produced, tp = ev[2], ev[3], ev[4], ev[5]
  local cursor = st.epoch .. '-' .. string.format('%d', st.seq + 1)
  local new
  -- The dedupe entry is claimed first (one call for the common case, a new
  -- event); only a repeat reads the entry it found.
  if redis.call('HSETNX', st.d, eid, token .. ' ' .. cursor) == 0 then
    -- Appended before: by this very call retried after a lost reply (same
    -- token: still new to the caller), or a redelivery. Either way it keeps
    -- its cursor and is routed again; sockets drop what they have.
    local tok, cur = string.match(redis.call('HGET', st.d, eid), '^(%S+) (.+)$')
    cursor, new = cur, (tok == token) and 1 or 0
  else
    st.seq = st.seq + 1
    if st.len >= hmax then
      -- The oldest entries leave the history; their ids leave the dedupe map.
      for _, entry in ipairs(redis.call('XRANGE', st.h, '-', '+', 'COUNT', st.len - hmax + 1)) do
        local f = entry[2]
        for j = 1, #f, 2 do
          if f[j] == 'id' then redis.call('HDEL', st.d, f[j + 1]) end
        end
      end
      st.len = hmax - 1
    end
    redis.call('XADD', st.h, 'MAXLEN', '=', hmax, cursor,
               'raw', raw, 'produced_ms', produced, 'tp', tp, 'id', eid)
    st.len = st.len + 1
    if ev[6] ~= '' then
      local known = redis.call('HGET', st.v, ev[6])
      if not known or version_of(known) < ev[7] then
        redis.call('HSET', st.v, ev[6], ev[8])
      end
    end
    st.touched = true
    new = 1
  end
  out[#out + 1] = cursor
  out[#out + 1] = new
  if #st.holders > 0 then
    local elem = '\149' .. cmsgpack.pack(st.id) .. cmsgpack.pack(cursor) .. bin(raw) ..
                 cmsgpack.pack(produced) .. (tp ~= '' and cmsgpack.pack(tp) or '\192')
    for _, m in ipairs(st.holders) do
      local r = routes[m]
      if not r then r = {}; routes[m] = r; targets[#targets + 1] = m end
      r[#r + 1] = elem
    end
  end
end
for _, st in pairs(users) do
  if st.touched then
    redis.call('PEXPIRE', st.h, idle)
    redis.call('PEXPIRE', st.v, idle)
    redis.call('PEXPIRE', st.d, idle)
  end
end
for _, m in ipairs(targets) do
  -- A member is RUN/INSTANCE_ID (RUN: 12 hex digits): publish to the instance.
  redis.call('PUBLISH', prefix .. ':instance:' .. string.sub(m, 14),
             arr(#routes[m]) .. table.concat(routes[m]))
end
out[#out + 1] = #targets
return out
"""
_APPEND_SHA: Final = hashlib.sha1(_APPEND_LUA.encode()).hexdigest()

# Snapshots of many users at once (the connects of a burst), atomically:
# KEYS: [1] the views marker. ARGV: [1] key prefix, [2] msgpack list of user
# ids. Returns the marker's existence (0/1), then per user a list: the id of
# the newest history entry ('' when none), then the view's OrderState JSONs.
_SNAPSHOTS_LUA: Final = r"""
local prefix = ARGV[1]
local out = {redis.call('EXISTS', KEYS[1])}
for _, id in ipairs(cmsgpack.unpack(ARGV[2])) do
  local base = prefix .. ':{' .. id .. '}:'
  local last = redis.call('XREVRANGE', base .. 'h', '+', '-', 'COUNT', 1)[1]
  local entry = redis.call('HVALS', base .. 'v')
  table.insert(entry, 1, last and last[1] or '')
  out[#out + 1] = entry
end
return out
"""
_SNAPSHOTS_SHA: Final = hashlib.sha1(_SNAPSHOTS_LUA.encode()).hexdigest()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unique(items: Sequence[Envelope]) -> list[Envelope]:
    """The same event twice in one batch: keep the first, like a redelivery."""
    unique: dict[str, Envelope] = {}
    for item in items:
        unique.setdefault(item.event.event_id, item)
    return list(unique.values())


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
        history_idle_s: float = HISTORY_IDLE_S,
    ) -> None:
        self.url = redact_url(url)
        if "{" in key_prefix or "}" in key_prefix:
            raise SessionStoreError(f"key prefix {key_prefix!r} must not contain braces")
        if history_max < 1 or lease_ttl_s <= 0 or history_idle_s <= 0:
            raise SessionStoreError("history_max, lease_ttl_s and history_idle_s must be positive")
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
        #: The pump's appends, written at once in batch order (`send_publish`);
        #: None for TLS or unix-socket URLs (the pool then carries them).
        self._pipe = OrderedPipe(url, timeout_s=SOCKET_TIMEOUT_S) if pipe_supports(url) else None
        self.instance_id = instance_id
        #: This run of the instance, as it appears in `instances` and `{user}:s`:
        #: a restarted instance (same id) is a new member, so the entries of
        #: its previous run die with that run's lease instead of lingering.
        self._member = f"{uuid.uuid4().hex[:12]}/{instance_id}"
        self.history_max = history_max
        self.lease_ttl_s = lease_ttl_s
        self.history_idle_s = history_idle_s
        self._idle_ms = max(1, round(history_idle_s * 1000))
        self._prefix = key_prefix
        self._views = RedisViews(
            self._redis, key_prefix, lambda user_id: self._key(user_id, "v"), self._idle_ms
        )
        self._listener: RouteListener | None = None
        self._stopped = False
        self._trips = RoundTrips()
        #: The route leases (`SessionLeases`), in their own module.
        self._leases = RedisLeases(
            self._redis,
            key_prefix=key_prefix,
            member=self._member,
            instance_id=instance_id,
            lease_ttl_s=lease_ttl_s,
            history_idle_s=history_idle_s,
            trips=self._trips,
        )
        #: Events appended to a history (duplicates excluded).
        self.published_events = 0
        self._snapshots: Batcher[str, Snapshot] = Batcher(
            self._read_snapshots, name="orderpush-snapshots"
        )

    @property
    def round_trips(self) -> int:
        """Redis round trips (pipelines, scripts and single commands) made so far."""
        return self._trips.count

    @property
    def lease_rewrites(self) -> int:
        """Times this instance found its own lease gone and wrote its sessions again."""
        return self._leases.lease_rewrites

    def stats(self) -> SessionStats:
        return SessionStats(
            round_trips=self.round_trips,
            published_events=self.published_events,
            lease_rewrites=self.lease_rewrites,
            route_gaps=self.gaps,
            bad_routes=self.bad_messages,
        )

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

    @property
    def _instances_key(self) -> str:
        return self._leases.instances_key

    # -- lifecycle ---------------------------------------------------------

    async def start(self, deliver: DeliverFn, on_gap: GapFn | None = None) -> None:
        self._leases.on_gap = on_gap
        self._listener = RouteListener(
            self._redis, self._instance_channel(self.instance_id), self.url, deliver, on_gap
        )
        try:
            await self._load_scripts()
            await self._leases.beat()
            await self._listener.start()
        except (RedisError, OSError) as exc:
            raise SessionStoreError(f"cannot reach Redis at {self.url}: {exc}") from exc

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._listener is not None:
            await self._listener.stop()
        try:
            await self._leases.drop_all()
        except RedisError as exc:
            # Without our lease the entries count for nothing; they are pruned
            # or expire. Stopping must not fail for this.
            log.warning("sessions: could not drop leases on %s: %s", self.url, exc)
        if self._pipe is not None:
            await self._pipe.close()
        await self._redis.aclose()

    # -- publish -----------------------------------------------------------

    async def publish(self, items: Sequence[Envelope]) -> list[Delivery]:
        batch = _unique(items)
        if not batch:
            return []
        # One token per call, so our own retries are not taken for redeliveries.
        reply = await self._run_append(self._append_args(batch, uuid.uuid4().hex))
        return self._deliveries(batch, reply)

    async def send_publish(self, items: Sequence[Envelope]) -> Awaitable[list[Delivery]]:
        batch = _unique(items)
        if self._pipe is None or not batch:
            return asyncio.ensure_future(self.publish(items))
        keys, args = self._append_args(batch, uuid.uuid4().hex)
        await self._pipe.connect()  # no suspension while connected
        self._trips.count += 1
        sent = self._pipe.send("EVALSHA", _APPEND_SHA, len(keys), *keys, *args)
        return asyncio.ensure_future(self._sent_reply(batch, (keys, args), sent))

    async def _sent_reply(
        self,
        batch: list[Envelope],
        keys_args: tuple[list[str], list[Any]],
        sent: asyncio.Future[Any],
    ) -> list[Delivery]:
        assert self._pipe is not None
        try:
            reply = await self._pipe.result(sent)
        except NoScriptError:  # Redis restarted: load the script, send again
            await self._load_scripts()
            keys, args = keys_args
            self._trips.count += 1
            reply = await self._pipe.call("EVALSHA", _APPEND_SHA, len(keys), *keys, *args)
        return self._deliveries(batch, reply)

    def _deliveries(self, batch: list[Envelope], reply: list[Any]) -> list[Delivery]:
        self.published_events += sum(int(flag) for flag in reply[1 : 2 * len(batch) : 2])
        return [
            Delivery(user_id=item.event.user_id, cursor=_str(reply[2 * n]), envelope=item)
            for n, item in enumerate(batch)
        ]

    def _append_args(self, batch: Sequence[Envelope], token: str) -> tuple[list[str], list[Any]]:
        users: dict[str, int] = {}
        # Text, not bytes: Redis's cmsgpack cannot read msgpack's bin type.
        # Record values are valid UTF-8 (they decoded as JSON).
        events: list[tuple[int, str, str, int, str, str, int, str]] = []
        for item in batch:
            event = item.event
            index = users.setdefault(event.user_id, len(users) + 1)
            order_id, version, state = "", 0, ""
            if event.is_order_event and event.status is not None and event.version is not None:
                order_id, version = event.order_id, event.version
                state = _state_encoder.encode(
                    OrderState(event.order_id, event.status, event.version, event.occurred_at)
                ).decode()
            events.append(
                (
                    index,
                    event.event_id,
                    item.raw.decode(),
                    item.produced_ms,
                    item.traceparent or "",
                    order_id,
                    version,
                    state,
                )
            )
        args: list[Any] = [
            token,
            self.history_max,
            self._idle_ms,
            epoch_ms(),
            self._prefix,
            self._member,
            _batch_encoder.encode((list(users), events)),
        ]
        return [self._instances_key], args

    async def _run_append(self, keys_args: tuple[list[str], list[Any]]) -> list[Any]:
        """One round trip; two if the script cache was flushed (Redis restarted)."""
        keys, args = keys_args
        self._trips.count += 1
        try:
            reply: list[Any] = await self._redis.evalsha(_APPEND_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # Same token on the second try: what the first one appended (if
            # anything) comes back as new, not as a duplicate.
            await self._load_scripts()
            self._trips.count += 1
            reply = await self._redis.evalsha(_APPEND_SHA, len(keys), *keys, *args)
        return reply

    # -- history and view --------------------------------------------------

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        try:
            epoch, seq = cursor_key(cursor)
        except ValueError:
            return None
        stream = self._key(user_id, "h")
        # One transaction: trimming between the two reads would open a silent gap.
        pipe = self._redis.pipeline(transaction=True)
        pipe.xrevrange(stream, max="+", min="-", count=1)
        pipe.xrange(stream, min=f"({cursor}" if (epoch, seq) != (0, 0) else "-", max="+")
        self._trips.count += 1
        last, entries = await pipe.execute()
        if not last:
            return [] if (epoch, seq) == (0, 0) else None
        last_epoch, last_seq = cursor_key(_str(last[0][0]))
        if (epoch, seq) == (0, 0):
            epoch = last_epoch
        if epoch != last_epoch or seq > last_seq:
            return None  # another incarnation of the history, or from the future
        if entries and _str(entries[0][0]) != make_cursor(epoch, seq + 1):
            return None  # trimmed past the cursor
        history: list[Delivery] = []
        for entry_id, fields in entries:
            try:
                event = decode_event(fields[b"raw"])
            except PoisonEvent as exc:  # appended by an older, laxer version
                log.warning("sessions: skipping bad history entry %s: %s", entry_id, exc)
                continue
            produced_ms = int(fields[b"produced_ms"])
            traceparent = _str(fields[b"tp"]) if fields.get(b"tp") else None
            envelope = Envelope(
                event=event, raw=fields[b"raw"], produced_ms=produced_ms, traceparent=traceparent
            )
            history.append(Delivery(user_id=user_id, cursor=_str(entry_id), envelope=envelope))
        return history

    async def snapshot(self, user_id: str) -> Snapshot:
        # The snapshots asked for together (a burst of connects) are read in
        # one script call: no append can land between a view and its cursor.
        return await self._snapshots.submit(user_id)

    async def _read_snapshots(self, user_ids: list[str]) -> list[Snapshot]:
        args = (self._views.marker_key, self._prefix, _batch_encoder.encode(user_ids))
        self._trips.count += 1
        try:
            reply: list[Any] = await self._redis.evalsha(_SNAPSHOTS_SHA, 1, *args)
        except NoScriptError:
            await self._load_scripts()
            self._trips.count += 1
            reply = await self._redis.evalsha(_SNAPSHOTS_SHA, 1, *args)
        whole = bool(int(reply[0]))
        snapshots = []
        for last, *view in reply[1:]:
            orders = sorted(
                (_state_decoder.decode(raw) for raw in view), key=lambda order: order.order_id
            )
            snapshots.append(Snapshot(orders, _str(last) or ZERO_CURSOR, whole))
        return snapshots

    # -- rebuilding the views (redis_views.py) -----------------------------

    async def views_marked(self) -> bool:
        return await self._views.marked()

    async def begin_rebuild(self) -> str | None:
        return await self._views.begin()

    async def restore_views(self, states: Sequence[Event]) -> int:
        return await self._views.restore(states)

    async def finish_rebuild(self, token: str) -> bool:
        return await self._views.finish(token)

    # -- route leases (redis_leases.py) ------------------------------------

    async def _load_scripts(self) -> None:
        self._trips.count += 1
        await self._redis.script_load(_APPEND_LUA)
        await self._redis.script_load(_SNAPSHOTS_LUA)
        await self._leases.load_script()

    async def add_session(self, user_id: str) -> None:
        await self._leases.add_session(user_id)

    async def remove_session(self, user_id: str) -> None:
        await self._leases.remove_session(user_id)

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        await self._leases.refresh_leases(user_ids)

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """For each user, the live instances holding a route lease of the user.
        A helper for tests, no part of the `SessionLeases` interface."""
        return await self._leases.locate(user_ids)
