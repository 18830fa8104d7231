"""The order service: owns each order's status and version.

It turns a payment outcome into the order (`order.pending` v1, or
`order.cancelled` v1 for a declined card), then waits for inventory, billing
and delivery: all three succeeded -> `order.confirmed`; inventory rejected ->
`order.cancelled` at once. Only this service writes `order.*` events, so the
version it keeps here is the order's version: it grows by exactly one per
status change, and a final status (confirmed, cancelled) never changes
again, whatever arrives late.
"""

from __future__ import annotations

import json
from typing import Any, Final

from backend_stubs.runner import follow_up
from backend_stubs.store import Store
from orderpush_core.events import Event

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS orders (
    order_id  TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL,
    status    TEXT NOT NULL,
    version   INTEGER NOT NULL,
    -- The data of each downstream success, NULL until it arrives.
    reserved  TEXT,
    invoiced  TEXT,
    scheduled TEXT
);
"""

#: Downstream successes the order waits for, and the column each fills.
_PARTS: Final = {
    "inventory.reserved": "reserved",
    "billing.invoiced": "invoiced",
    "delivery.scheduled": "scheduled",
}


class OrderService:
    name: Final = "order"
    topics: Final = ("payments", "inventory", "billing", "delivery")

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(_SCHEMA)

    def handle(self, event: Event) -> list[Event]:
        if event.type in ("payment.authorized", "payment.declined"):
            return self._place(event)
        if event.type in _PARTS:
            return self._part_done(event, _PARTS[event.type])
        if event.type == "inventory.rejected":
            return self._reject(event)
        return []  # payment.refunded and anything newer: not ours to act on

    def _place(self, event: Event) -> list[Event]:
        if self._row(event.order_id) is not None:
            return []  # placed already (a second payment event for one order)
        conn = self.store.conn
        if event.type == "payment.declined":
            conn.execute(
                "INSERT INTO orders (order_id, user_id, status, version)"
                " VALUES (?, ?, 'cancelled', 1)",
                (event.order_id, event.user_id),
            )
            reason = {"reason": "payment_declined"}
            return [follow_up(event, "order.cancelled", status="cancelled", version=1, data=reason)]
        conn.execute(
            "INSERT INTO orders (order_id, user_id, status, version) VALUES (?, ?, 'pending', 1)",
            (event.order_id, event.user_id),
        )
        # Downstream services learn the order from order.pending alone, so
        # it carries what they need (items for inventory, amount for billing).
        keep = ("items", "amount_cents", "currency")
        data: dict[str, Any] = {k: event.data[k] for k in keep if k in event.data}
        return [follow_up(event, "order.pending", status="pending", version=1, data=data)]

    def _part_done(self, event: Event, column: str) -> list[Event]:
        row = self._row(event.order_id)
        if row is None or row["status"] != "pending":
            return []  # unknown, or already final: a late success changes nothing
        conn = self.store.conn
        # `column` comes from _PARTS, never from the event: safe to format in.
        conn.execute(
            f"UPDATE orders SET {column} = ? WHERE order_id = ?",
            (json.dumps(event.data), event.order_id),
        )
        row = self._row(event.order_id)
        assert row is not None
        if any(row[c] is None for c in _PARTS.values()):
            return []
        version = row["version"] + 1
        conn.execute(
            "UPDATE orders SET status = 'confirmed', version = ? WHERE order_id = ?",
            (version, event.order_id),
        )
        invoiced = json.loads(row["invoiced"])
        scheduled = json.loads(row["scheduled"])
        data = {
            "invoice_number": invoiced.get("invoice_number"),
            "delivery_slot": scheduled.get("slot"),
        }
        return [follow_up(event, "order.confirmed", status="confirmed", version=version, data=data)]

    def _reject(self, event: Event) -> list[Event]:
        row = self._row(event.order_id)
        if row is None or row["status"] != "pending":
            return []
        version = row["version"] + 1
        self.store.conn.execute(
            "UPDATE orders SET status = 'cancelled', version = ? WHERE order_id = ?",
            (version, event.order_id),
        )
        data: dict[str, Any] = {"reason": event.data.get("reason", "inventory_rejected")}
        if "sku" in event.data:
            data["sku"] = event.data["sku"]
        return [follow_up(event, "order.cancelled", status="cancelled", version=version, data=data)]

    def _row(self, order_id: str) -> Any:
        return self.store.conn.execute(
            "SELECT * FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()

    def order_status(self, order_id: str) -> tuple[str, int] | None:
        row = self._row(order_id)
        return None if row is None else (str(row["status"]), int(row["version"]))
