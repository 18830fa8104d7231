"""Draining an instance on SIGTERM: its sockets closed over a window, not at once.

Closing every socket of an instance at the same moment sends all its clients
to the other instances together: a reconnect storm that grows with the
instance's size. Instead each socket gets its own moment, spread evenly over
`window_s`, and its close (1012) tells the client how long to wait before
reconnecting (`retry_after_ms=N` in the reason, docs/protocol.md), so the
reconnects arrive at the rate of the closes.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from typing import Final

from gateway.hub import Connection
from gateway.protocol import CloseCode

#: Upper bound of the wait a drained client is told to keep before it
#: reconnects; the spreading itself comes from the close times.
RETRY_AFTER_MAX_MS: Final = 1000
_RETRY_AFTER: Final = re.compile(r"retry_after_ms=(\d+)")


def drain_reason(retry_after_ms: int) -> str:
    """The reason of a drain's 1012 close (well under the 123-byte limit)."""
    return f"server restarting; retry_after_ms={retry_after_ms}"


def retry_after_ms(reason: str) -> int | None:
    """The wait a close reason asks for, if it asks for one."""
    found = _RETRY_AFTER.search(reason)
    return int(found.group(1)) if found else None


def close_times_s(count: int, window_s: float, rng: random.Random) -> list[float]:
    """`count` moments in [0, window_s): one in each of `count` equal slices,
    at a random place in its slice, so the closes come at an even rate."""
    if count == 0:
        return []
    slice_s = window_s / count
    return [slice_s * (n + rng.random()) for n in range(count)]


async def close_spread(
    connections: Sequence[Connection], window_s: float, rng: random.Random | None = None
) -> None:
    """Close `connections` with 1012 over `window_s`, in random order."""
    rng = rng or random.Random()
    order = list(connections)
    rng.shuffle(order)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for conn, at_s in zip(order, close_times_s(len(order), window_s, rng), strict=True):
        delay_s = start + at_s - loop.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        conn.close(CloseCode.SERVICE_RESTART, drain_reason(rng.randrange(RETRY_AFTER_MAX_MS)))
