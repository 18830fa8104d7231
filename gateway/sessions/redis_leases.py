"""Route leases on Redis (`SessionLeases`): which instances hold sockets of
a user, so the append script routes the user's events there.

Keys (see `redis.py` for the whole layout): `PREFIX:{user}:s`, the set of
members (RUN/INSTANCE_ID) holding sockets of the user, and `PREFIX:instances`,
the sorted set of members by lease expiry (epoch ms). A beat is one ZADD,
whatever the number of users; the `{user}:s` entries are rewritten only when
the instance's own lease was lost, and otherwise swept round slowly, in
bounded chunks, so they expire with the rest of an idle user's keys.

Not admission: `gateway/presence/` counts sockets against a limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Collection, Sequence
from typing import Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway.sessions.base import GapFn
from gateway.sessions.redis_routes import epoch_ms
from orderpush_core.batching import Batcher

log = logging.getLogger(__name__)

#: Users whose `{user}:s` entry one heartbeat rewrites (more when needed to
#: go round all local users well within the idle time); bounds a beat's work.
SWEEP_CHUNK_MIN: Final = 200
#: Users per script call when many session entries are written at once.
SESSIONS_CHUNK: Final = 1000
_list_encoder: Final = msgspec.msgpack.Encoder()

# Writes (idle ms given) or removes (idle '') this instance's entry in the
# session sets of many users. ARGV: [1] key prefix, [2] this instance,
# [3] idle ms or '', [4] msgpack list of user ids. One argument for all the
# users: a pipeline of two commands per user costs the client far more.
SESSIONS_LUA: Final = r"""
local prefix, me, idle = ARGV[1], ARGV[2], ARGV[3]
for _, id in ipairs(cmsgpack.unpack(ARGV[4])) do
  local key = prefix .. ':{' .. id .. '}:s'
  if idle == '' then
    redis.call('SREM', key, me)
  else
    redis.call('SADD', key, me)
    redis.call('PEXPIRE', key, idle)
  end
end
return 0
"""

SESSIONS_SHA: Final = hashlib.sha1(SESSIONS_LUA.encode()).hexdigest()

# Adds and removes, in order, this instance's entry in the session sets of
# the users whose first socket arrived here or whose last one left. ARGV:
# [1] key prefix, [2] this instance, [3] idle ms, [4] msgpack list of
# {user id, 1 = add | 0 = remove}. The calls of a burst of connects in one.
SESSION_OPS_LUA: Final = r"""
local prefix, me, idle = ARGV[1], ARGV[2], ARGV[3]
for _, op in ipairs(cmsgpack.unpack(ARGV[4])) do
  local key = prefix .. ':{' .. op[1] .. '}:s'
  if op[2] == 1 then
    redis.call('SADD', key, me)
    redis.call('PEXPIRE', key, idle)
  else
    redis.call('SREM', key, me)
  end
end
return 0
"""

SESSION_OPS_SHA: Final = hashlib.sha1(SESSION_OPS_LUA.encode()).hexdigest()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RoundTrips:
    """A round-trip counter shared by the parts of one Redis store."""

    def __init__(self) -> None:
        self.count = 0


class RedisLeases:
    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        member: str,
        instance_id: str,
        lease_ttl_s: float,
        history_idle_s: float,
        trips: RoundTrips,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        #: RUN/INSTANCE_ID: this run of the instance (see `redis.py`).
        self.member = member
        self.instance_id = instance_id
        self.lease_ttl_s = lease_ttl_s
        self.history_idle_s = history_idle_s
        self._idle_ms = max(1, round(history_idle_s * 1000))
        self._trips = trips
        #: Told when the lease was found lost (routes may have been lost).
        self.on_gap: GapFn | None = None
        self._local_users: set[str] = set()
        self._sweep: deque[str] = deque()
        # A user's first socket here and its last one leaving: the calls of
        # sockets that come and go together are sent as one script call, in
        # order (so a user's removal never overtakes its addition).
        self._ops: Batcher[tuple[str, int], None] = Batcher(
            self._run_ops, name="orderpush-session-ops"
        )
        #: Times this instance found its own lease gone and wrote its sessions again.
        self.lease_rewrites = 0

    def _key(self, user_id: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:s"

    @property
    def instances_key(self) -> str:
        return f"{self._prefix}:instances"

    async def load_script(self) -> None:
        self._trips.count += 1
        await self._redis.script_load(SESSIONS_LUA)
        await self._redis.script_load(SESSION_OPS_LUA)

    async def drop_all(self) -> None:
        """Stopping: drop this instance's lease and all its entries."""
        self._trips.count += 1
        await self._redis.zrem(self.instances_key, self.member)
        await self._write_sessions(list(self._local_users), remove=True)
        self._local_users.clear()

    async def add_session(self, user_id: str) -> None:
        self._local_users.add(user_id)
        await self._ops.submit((user_id, 1))

    async def _run_ops(self, ops: list[tuple[str, int]]) -> list[None]:
        args = (self._prefix, self.member, str(self._idle_ms), _list_encoder.encode(ops))
        self._trips.count += 1
        try:
            await self._redis.evalsha(SESSION_OPS_SHA, 0, *args)
        except NoScriptError:
            await self.load_script()
            self._trips.count += 1
            await self._redis.evalsha(SESSION_OPS_SHA, 0, *args)
        return [None] * len(ops)

    async def _write_sessions(self, user_ids: Sequence[str], *, remove: bool = False) -> None:
        """Add (or remove) this instance in the users' session sets, in
        chunks, yielding to the loop between them."""
        idle = "" if remove else str(self._idle_ms)
        for offset in range(0, len(user_ids), SESSIONS_CHUNK):
            chunk = _list_encoder.encode(list(user_ids[offset : offset + SESSIONS_CHUNK]))
            args = (self._prefix, self.member, idle, chunk)
            self._trips.count += 1
            try:
                await self._redis.evalsha(SESSIONS_SHA, 0, *args)
            except NoScriptError:
                await self.load_script()
                self._trips.count += 1
                await self._redis.evalsha(SESSIONS_SHA, 0, *args)

    async def remove_session(self, user_id: str) -> None:
        self._local_users.discard(user_id)
        await self._ops.submit((user_id, 0))

    async def beat(self) -> bool:
        """Extend this instance's lease; True when it had been lost."""
        now_ms = epoch_ms()
        ttl_ms = max(1, round(self.lease_ttl_s * 1000))
        pipe = self._redis.pipeline(transaction=False)
        pipe.zscore(self.instances_key, self.member)
        pipe.zadd(self.instances_key, {self.member: now_ms + ttl_ms})
        pipe.zremrangebyscore(self.instances_key, "-inf", now_ms)  # dead instances
        self._trips.count += 1
        previous, _, _ = await pipe.execute()
        return previous is None or float(previous) <= now_ms

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        # `user_ids` is the hub's list, taken as this beat began: all the users
        # this instance holds. Ones we were never told of are written now.
        unknown = [user for user in user_ids if user not in self._local_users]
        self._local_users = set(user_ids)
        lost = await self.beat()
        if unknown and not lost:
            await self._write_sessions(unknown)
        if lost:
            # Others may have pruned our entries, or Redis lost them: write
            # them all again (in bounded chunks, yielding between), then say
            # that routes may have been lost meanwhile.
            self.lease_rewrites += 1
            users = list(self._local_users)
            log.warning(
                "sessions: lease of %s was lost; rewriting %d", self.instance_id, len(users)
            )
            await self._write_sessions(users)
            if self.on_gap is not None:
                self.on_gap(epoch_ms())
            return
        # Entries expire after the idle time like the rest of a user's keys:
        # go round the local users, a bounded chunk per beat, well within it.
        if not self._sweep:
            self._sweep.extend(self._local_users)
        beats_per_round = max(1.0, self.history_idle_s / 4 / (self.lease_ttl_s / 3))
        chunk = max(SWEEP_CHUNK_MIN, math.ceil(len(self._local_users) / beats_per_round))
        batch = [self._sweep.popleft() for _ in range(min(chunk, len(self._sweep)))]
        batch = [user for user in batch if user in self._local_users]
        if batch:
            await self._write_sessions(batch)

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """For each user, the live instances holding a route lease of the user.
        A helper for tests, no part of the `SessionLeases` interface."""
        users = list(user_ids)
        if not users:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrangebyscore(self.instances_key, f"({epoch_ms()}", "+inf")
        for user_id in users:
            pipe.smembers(self._key(user_id))
        self._trips.count += 1
        live, *members = await pipe.execute()
        alive = {_str(m) for m in live}
        return {
            user_id: {_str(m).partition("/")[2] for m in found if _str(m) in alive}
            for user_id, found in zip(users, members, strict=True)
        }
