"""The inventory service: reserves the items of each new order.

Stock is unlimited in the stubs except for the fault trigger of docs/protocol.md:
a line item with SKU `OUT-OF-STOCK` gets the whole order rejected, which
drives the cancel-and-refund path of the saga.
"""

from __future__ import annotations

import json
from typing import Any, Final

from backend_stubs.new_order import NewOrderService
from backend_stubs.runner import follow_up
from orderpush_core.events import Event

OUT_OF_STOCK_SKU: Final = "OUT-OF-STOCK"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    status   TEXT NOT NULL,  -- reserved | rejected
    items    TEXT NOT NULL
);
"""


def line_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The {sku, qty} line items an event carries; anything else is skipped."""
    items = data.get("items")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


class InventoryService(NewOrderService):
    name = "inventory"
    table = "reservations"
    schema = _SCHEMA

    def act(self, event: Event) -> list[Event]:
        conn = self.store.conn
        items = line_items(event.data)
        missing = next((i["sku"] for i in items if i.get("sku") == OUT_OF_STOCK_SKU), None)
        status = "reserved" if missing is None else "rejected"
        conn.execute(
            "INSERT INTO reservations (order_id, status, items) VALUES (?, ?, ?)",
            (event.order_id, status, json.dumps(items)),
        )
        if missing is not None:
            data = {"reason": "out_of_stock", "sku": missing}
            return [follow_up(event, "inventory.rejected", data=data)]
        return [follow_up(event, "inventory.reserved", data={"items": items})]
