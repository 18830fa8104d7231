"""Presence in Redis: the per-user socket count shared by every instance.

One sorted set per user, beside the session store's keys and in the same
hash slot:

    PREFIX:{user}:c     sorted set: INSTANCE/CONNECTION -> lease expiry (Redis time, ms)

Counting and adding happen in one script, against Redis's own clock, so two
instances admitting the same user at once cannot both take the last place,
and the instances' clocks do not matter. Each instance refreshes the leases
of its sockets every `lease_ttl_s / 3`; the script drops expired members
before counting, so the sockets of a killed instance stop counting after
`lease_ttl_s` with nobody cleaning up after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S: Final = 5.0

# KEYS: the user's set. ARGV: member, limit, lease ms. 1 = counted, 0 = full.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: the user's set. ARGV: lease ms, then the members this instance holds.
_REFRESH: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
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
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._count = self._redis.register_script(_COUNT)
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

    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        member = self._member(connection_id)
        counted: Any = await self._acquire(
            keys=[self._key(user_id)], args=[member, limit, self.lease_ms]
        )
        if int(counted) != 1:
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
        await self._redis.zrem(self._key(user_id), member)

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
        """Extend the leases of every socket this instance holds (one round trip)."""
        held = [(user, sorted(members)) for user, members in self._held.items() if members]
        if not held:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id, members in held:
                await self._refresh(
                    keys=[self._key(user_id)], args=[self.lease_ms, *members], client=pipe
                )
            await pipe.execute()
