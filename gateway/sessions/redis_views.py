"""The Redis side of rebuilding the order views (gateway/rebuild.py).

Two keys besides the users' own: `PREFIX:views`, written once the views
are whole (after a rebuild), and `PREFIX:rebuilding`, the token of the one
rebuild in progress. Redis restarted empty has neither: the views must be
rebuilt. A rebuild writes the marker only if its token is still there, so a
Redis that lost its data again during the rebuild is rebuilt again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis

from gateway.protocol import OrderState
from orderpush_core.events import Event

#: A rebuild holds its token this long; one that died is taken over after it.
REBUILD_LEASE_MS: Final = 30_000
#: Orders written per script call.
RESTORE_CHUNK: Final = 500

# KEYS: view hashes, one per order. ARGV: [1] idle ms, then per order
# (order_id, version, OrderState JSON). Writes an order unless the view holds
# it at the same or a newer version (appended since Redis came back).
_RESTORE_LUA = """
local idle, n = ARGV[1], 0
for i = 1, #KEYS do
  local order, version, state = ARGV[3 * i - 1], tonumber(ARGV[3 * i]), ARGV[3 * i + 1]
  local known = redis.call('HGET', KEYS[i], order)
  if not known or cjson.decode(known)['version'] < version then
    redis.call('HSET', KEYS[i], order, state)
    n = n + 1
  end
  redis.call('PEXPIRE', KEYS[i], idle)
end
return n
"""
# KEYS: [1] rebuilding, [2] views marker. ARGV: [1] the rebuild's token.
_FINISH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], '1')
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
_state_encoder: Final = msgspec.json.Encoder()


class RedisViews:
    """Marker, rebuild token and view restore on one Redis client."""

    def __init__(
        self, redis: Redis, prefix: str, view_key: Callable[[str], str], idle_ms: int
    ) -> None:
        self._redis = redis
        self._marker = f"{prefix}:views"
        self._rebuilding = f"{prefix}:rebuilding"
        self._view_key = view_key
        self._idle_ms = idle_ms
        self._restore = redis.register_script(_RESTORE_LUA)
        self._finish = redis.register_script(_FINISH_LUA)

    @property
    def marker_key(self) -> str:
        return self._marker

    async def marked(self) -> bool:
        return bool(await self._redis.exists(self._marker))

    async def begin(self) -> str | None:
        """A token if this caller is to rebuild; None if another one is."""
        token = uuid.uuid4().hex
        taken = await self._redis.set(self._rebuilding, token, nx=True, px=REBUILD_LEASE_MS)
        return token if taken else None

    async def finish(self, token: str) -> bool:
        return bool(await self._finish(keys=[self._rebuilding, self._marker], args=[token]))

    async def restore(self, events: Sequence[Event]) -> int:
        orders = [e for e in events if e.status is not None and e.version is not None and e.user_id]
        written = 0
        for start in range(0, len(orders), RESTORE_CHUNK):
            chunk = orders[start : start + RESTORE_CHUNK]
            args: list[Any] = [self._idle_ms]
            for e in chunk:
                assert e.status is not None and e.version is not None
                state = OrderState(e.order_id, e.status, e.version, e.occurred_at)
                args += [e.order_id, e.version, _state_encoder.encode(state)]
            keys = [self._view_key(e.user_id) for e in chunk]
            written += int(await self._restore(keys=keys, args=args))
        return written
