"""Redis is a cache that Kafka can rebuild: the order views, after Redis
came back empty.

Every order.* event the pump hands on also goes, before its batch is
committed, to the compacted topic `order-state` (keyed by order id, so
Kafka keeps each order's latest event for ever). The session store keeps a
marker key that only a completed rebuild writes. Each instance checks it
every second; when it is missing (a Redis restarted without its data, a
new cluster), the instance reads `order-state` from the beginning to its
end, keeps the highest version of each order, and writes each order into
its user's view unless the view already holds a newer version (events
appended since Redis came back are newer). Then it writes the marker, but
only if Redis did not lose its data again meanwhile (the rebuild's own
token must still be there). Several instances may rebuild at once: the
writes are idempotent.

Histories are not rebuilt: a client whose cursor belongs to the lost
history gets a snapshot, which the rebuilt view makes whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from gateway.sessions.base import SessionHistory
from orderpush_core.bus.base import EventBus
from orderpush_core.events import ORDER_STATE_TOPIC, Event, PoisonEvent, decode_event

log = logging.getLogger("orderpush.rebuild")

#: How often each instance checks that Redis still holds the views.
CHECK_EVERY_S: Final = 1.0
#: The longest a snapshot waits for a rebuild in progress.
WAIT_READY_S: Final = 10.0
#: A rebuild that takes longer (Kafka away) is abandoned and tried again.
REBUILD_TIMEOUT_S: Final = 60.0


class ViewRebuilder:
    def __init__(
        self, bus: EventBus, store: SessionHistory, *, check_every_s: float = CHECK_EVERY_S
    ) -> None:
        self.bus = bus
        self.store = store
        self.check_every_s = check_every_s
        self.rebuilds = 0
        self.orders_restored = 0
        self.last_rebuild_s: float | None = None
        self._kick = asyncio.Event()

    async def check(self) -> None:
        """Rebuild the views if they are missing (and nobody else is on it)."""
        if not await self.store.views_marked():
            await self.rebuild()

    async def run(self) -> None:
        """Check, and rebuild when needed, until cancelled."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis or Kafka away: the next check tries again.
                log.warning("checking or rebuilding the order views failed", exc_info=True)
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.check_every_s)

    async def wait_ready(self) -> None:
        """Before a snapshot: while the views are missing, wait for their
        rebuild (at most WAIT_READY_S; then a snapshot of what there is)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_READY_S
        while not await self.store.views_marked():
            self._kick.set()
            if loop.time() > deadline:
                log.warning("snapshot served before the order views were rebuilt")
                return
            await asyncio.sleep(0.05)

    async def rebuild(self) -> None:
        token = await self.store.begin_rebuild()
        if token is None:
            return  # another instance is on it; the marker tells when it is done
        started = time.monotonic()
        async with asyncio.timeout(REBUILD_TIMEOUT_S):
            latest: dict[str, Event] = {}
            async for records in self.bus.scan(ORDER_STATE_TOPIC):
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except PoisonEvent:
                        continue  # the pump writes valid events only
                    known = latest.get(event.order_id)
                    if event.version is not None and (
                        known is None or (known.version or 0) < event.version
                    ):
                        latest[event.order_id] = event
            written = await self.store.restore_views(list(latest.values()))
            finished = await self.store.finish_rebuild(token)
        self.last_rebuild_s = time.monotonic() - started
        if not finished:
            log.warning("Redis lost its data again during the rebuild; starting over")
            return
        self.rebuilds += 1
        self.orders_restored += written
        log.info(
            "order views rebuilt from %s: %d orders read, %d written, in %.2fs",
            ORDER_STATE_TOPIC,
            len(latest),
            written,
            self.last_rebuild_s,
        )
