"""The delivery service: books a delivery slot for each new order.

Slots are two-hour windows tomorrow (UTC) between 08:00 and 20:00, handed
out in turn; a made-up but plausible answer that differs between orders.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from backend_stubs.new_order import NewOrderService
from backend_stubs.runner import follow_up
from orderpush_core.events import Event

FIRST_SLOT_HOUR: Final = 8
SLOT_HOURS: Final = 2
SLOTS_PER_DAY: Final = 6

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS deliveries (
    order_id   TEXT PRIMARY KEY,
    slot_start TEXT NOT NULL,
    slot_end   TEXT NOT NULL
);
"""


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def slot_for(booked: int, now: datetime) -> tuple[str, str]:
    """The `booked`-th slot of tomorrow (wrapping around), as RFC 3339 UTC."""
    tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(
        hour=FIRST_SLOT_HOUR, minute=0, second=0, microsecond=0
    )
    start = tomorrow + timedelta(hours=SLOT_HOURS * (booked % SLOTS_PER_DAY))
    return _rfc3339(start), _rfc3339(start + timedelta(hours=SLOT_HOURS))


class DeliveryService(NewOrderService):
    name = "delivery"
    table = "deliveries"
    schema = _SCHEMA

    def act(self, event: Event) -> list[Event]:
        conn = self.store.conn
        (booked,) = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()
        start, end = slot_for(int(booked), datetime.now(UTC))
        conn.execute(
            "INSERT INTO deliveries (order_id, slot_start, slot_end) VALUES (?, ?, ?)",
            (event.order_id, start, end),
        )
        return [follow_up(event, "delivery.scheduled", data={"slot": {"start": start, "end": end}})]
