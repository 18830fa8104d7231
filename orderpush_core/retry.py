"""One backoff for every "try again later" loop: the consume loop's rejoin,
the pump's retried steps, the session store's pub/sub resubscribe.

Delays double from `first_s` up to `max_s` and start again from `first_s`
after a success, so a short outage is retried quickly and a long one does
not hammer the server that is down.
"""

from __future__ import annotations

import asyncio


class Backoff:
    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff: need 0 < first_s ({first_s}) <= max_s ({max_s})")
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s

    def reset(self) -> None:
        """After a success: the next failure waits `first_s` again."""
        self.delay_s = self.first_s

    def next_delay_s(self) -> float:
        """The delay to wait now; the one after is twice as long (at most `max_s`)."""
        delay_s = self.delay_s
        self.delay_s = min(self.max_s, self.delay_s * 2)
        return delay_s

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay_s())
