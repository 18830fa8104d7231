"""The consumer loop: nothing is committed that was not handed on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from gateway.pump import Pump
from gateway.sessions import Delivery
from gateway.sessions.memory import MemoryBackplane, MemorySessionStore
from orderpush_core.bus import OutgoingRecord
from orderpush_core.bus.memory import MemoryEventBus
from orderpush_core.events import encode_event, make_event


class FlakyHub(Hub):
    """A hub whose first hand-over raises, as a bug would."""

    def __init__(self) -> None:
        super().__init__(GatewayMetrics())
        self.failures_left = 1
        self.delivered: list[Delivery] = []

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("boom")
        self.delivered.extend(deliveries)


async def test_a_batch_that_fails_unexpectedly_is_read_again_not_skipped() -> None:
    bus = MemoryEventBus()
    store = MemorySessionStore(MemoryBackplane(), "gw")
    hub = FlakyHub()
    await store.start(hub.deliver)
    pump = Pump(bus, store, hub, hub._metrics, group="gateway", client_id="gw")
    await pump.start()
    try:
        events = [
            make_event(
                "order.pending", order_id=f"o{n}", user_id="alice", status="pending", version=1
            )
            for n in range(3)
        ]
        await bus.publish([OutgoingRecord("orders", e.order_id, encode_event(e)) for e in events])
        async with asyncio.timeout(10):
            while len(hub.delivered) < 3:
                await asyncio.sleep(0.01)
        assert pump.rejoins == 1
        assert sorted(d.event.event_id for d in hub.delivered) == sorted(e.event_id for e in events)
        assert await pump.lag() == 0  # and committed: a new member starts after them
        successor = await bus.consumer(["orders"], "gateway")
        assert await successor.getmany(timeout_ms=200) == []
    finally:
        await pump.stop()
        await store.stop()
