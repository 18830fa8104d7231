"""What inventory, billing and delivery share: each acts once per new order.

Each consumes `orders`, reacts to `order.pending` only, and records the
orders it handled in a table keyed by `order_id`, so a second
`order.pending` for the same order (another event id) causes nothing.
"""

from __future__ import annotations

from typing import ClassVar

from backend_stubs.store import Store
from orderpush_core.events import Event


class NewOrderService:
    name: ClassVar[str]
    #: The table recording handled orders (its key column is `order_id`).
    table: ClassVar[str]
    schema: ClassVar[str]
    topics: ClassVar[tuple[str, ...]] = ("orders",)

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(self.schema)

    def handle(self, event: Event) -> list[Event]:
        if event.type != "order.pending":
            return []
        handled = self.store.conn.execute(
            # `table` is a class constant, never input: formatting it in is safe.
            f"SELECT 1 FROM {self.table} WHERE order_id = ?",
            (event.order_id,),
        ).fetchone()
        if handled:
            return []  # handled already under another event id
        return self.act(event)

    def act(self, event: Event) -> list[Event]:
        """Record the order in `table` and return the events it causes."""
        raise NotImplementedError
