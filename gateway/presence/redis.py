"""Presence in Redis: the per-user socket count shared by every instance.

One sorted set per user, beside the session store's keys and in the same
hash slot:

    PREFIX:{user}:c     sorted set: INSTANCE/CONNECTION -> lease expiry (Redis time, ms)

Counting and adding happen in one script, against Redis's own clock, so two
instances admitting the same user at once cannot both take the last place,
and the instances' clocks do not matter. The counts and releases that
arrive together (a burst of connects) go out as one call of that script, in
order (`orderpush_core/batching.py`). Each instance refreshes the leases of
its sockets every `lease_ttl_s / 3`, in chunks of `REFRESH_CHUNK` users per
call; the script drops expired members before counting, so the sockets of a
killed instance stop counting after `lease_ttl_s` with nobody cleaning up
after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orderpush_core.batching import Batcher

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S: Final = 5.0
#: Users whose socket leases one refresh call extends.
REFRESH_CHUNK: Final = 1000
_encoder: Final = msgspec.msgpack.Encoder()
#: (user, member, limit): count the socket; (user, member): release it.
_Op = tuple[str, str, int] | tuple[str, str]

# Counts and releases sockets of many users, in order. KEYS: none (the
# script names the users' sets from the prefix, like the session store's, so
# it needs a single Redis). ARGV: [1] key prefix, [2] lease ms, [3] msgpack
# list of operations: {user, member, limit} counts the socket unless the user
# holds `limit` sockets already; {user, member} (no limit) releases it.
# Returns one flag per operation: 1 = counted (or released), 0 = full.
_ADMIT_LUA: Final = r"""
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, op in ipairs(cmsgpack.unpack(ARGV[3])) do
  local key = prefix .. ':{' .. op[1] .. '}:c'
  local member, limit = op[2], op[3]
  if limit == nil then
    redis.call('ZREM', key, member)
    out[i] = 1
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= limit then
      out[i] = 0
    else
      redis.call('ZADD', key, now + ttl, member)
      redis.call('PEXPIRE', key, ttl)
      out[i] = 1
    end
  end
end
return out
"""

# Extends the leases of many users' sockets. ARGV: [1] key prefix, [2] lease
# ms, [3] msgpack map of user -> {members...}: the sockets this instance
# holds. Expired members (of dead instances) are dropped on the way.
_REFRESH_LUA: Final = r"""
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for user, members in pairs(cmsgpack.unpack(ARGV[3])) do
  local key = prefix .. ':{' .. user .. '}:c'
  for _, member in ipairs(members) do redis.call('ZADD', key, now + ttl, member) end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('PEXPIRE', key, ttl)
end
return 0
"""

# KEYS: the user's set. Members counted now.
_COUNT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


class RedisPresence:
    def __init__(
        self,
        url: str,
        instance_id: str,
        *,
        key_prefix: str = "orderpush",
        lease_ttl_s: float = 30.0,
    ) -> None:
        # Its own small client: presence must not queue behind the session
        # store's pool, and the store's module is not ours to change.
        self._redis: Redis = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            client_name=f"orderpush-presence:{instance_id}",
        )
        self.instance_id = instance_id
        self.lease_ms = max(1, round(lease_ttl_s * 1000))
        self._prefix = key_prefix
        self._admit = self._redis.register_script(_ADMIT_LUA)
        self._refresh_many = self._redis.register_script(_REFRESH_LUA)
        self._count = self._redis.register_script(_COUNT)
        # Counting and releasing of sockets that arrive together go out as
        # one script call (a burst of connects: one round trip for many).
        # One batcher for both keeps each socket's release after its count.
        self._ops: Batcher[_Op, int] = Batcher(self._run_ops, name="orderpush-presence-ops")
        self._held: defaultdict[str, set[str]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopped = False

    def _key(self, user_id: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:c"

    def _member(self, connection_id: str) -> str:
        return f"{self.instance_id}/{connection_id}"

    async def start(self) -> None:
        await self._redis.ping()  # unreachable Redis: fail at start, like the sessions
        self._task = asyncio.create_task(self._refresh_loop(), name="orderpush-presence")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None and not self._task.done():
            # Let a refresh in flight finish rather than cancel it: redis-py
            # can hang cleaning up a command cancelled mid-flight. Cancelled
            # (and not awaited) only if it is stuck.
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), SOCKET_TIMEOUT_S)
            except TimeoutError:
                self._task.cancel()
        held, self._held = self._held, defaultdict(set)
        # Bounded: a hung Redis must not hold the shutdown; what is left
        # behind expires with its leases.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._remove(held), SOCKET_TIMEOUT_S)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), SOCKET_TIMEOUT_S)

    async def _remove(self, held: dict[str, set[str]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, members in held.items():
                if members:
                    pipe.zrem(self._key(user_id), *members)
            await pipe.execute()

    async def _run_ops(self, ops: list[_Op]) -> list[int]:
        flags: Any = await self._admit(
            keys=[], args=[self._prefix, self.lease_ms, _encoder.encode(ops)]
        )
        return [int(flag) for flag in flags]

    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        member = self._member(connection_id)
        if await self._ops.submit((user_id, member, limit)) != 1:
            return False
        self._held[user_id].add(member)
        return True

    async def release(self, user_id: str, connection_id: str) -> None:
        member = self._member(connection_id)
        members = self._held.get(user_id)
        if members is not None:
            members.discard(member)
            if not members:
                del self._held[user_id]
        if self._stopped:
            return  # stop() removed what this instance held
        await self._ops.submit((user_id, member))

    async def count(self, user_id: str) -> int:
        return int(await self._count(keys=[self._key(user_id)]))

    async def _refresh_loop(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.lease_ms / 3000)
            if self._stopped:
                return
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                # The leases outlive two failed rounds; a longer outage only
                # lets this instance's sockets stop counting for a while.
                log.warning("refreshing socket leases failed: %s", exc)

    async def refresh(self) -> None:
        """Extend the leases of every socket this instance holds: one script
        call per `REFRESH_CHUNK` users, yielding to the loop between them.

        The held sets are encoded as they are (a map of user -> members):
        building a (user, sorted members) pair per user made 10,000 new
        containers per refresh with 5,000 users, and the young-generation
        collections they set off stopped the loop for 25-75 ms each time
        (bench/README.md, "No stalls"); a pipeline of one script call per
        user before that cost ~100 ms of client work."""
        users = list(self._held)
        for start in range(0, len(users), REFRESH_CHUNK):
            held = self._held
            chunk = {u: held[u] for u in users[start : start + REFRESH_CHUNK] if held.get(u)}
            if chunk:
                payload = _encoder.encode(chunk)
                await self._refresh_many(keys=[], args=[self._prefix, self.lease_ms, payload])
