"""The billing service: issues one invoice per new order.

Invoice numbers come from a SQLite sequence, so they are exactly the kind
of decision that must not be taken twice: a redelivered `order.pending`
gets the recorded `billing.invoiced` back (see runner.py), never a second
number.
"""

from __future__ import annotations

from typing import Final

from backend_stubs.runner import follow_up
from backend_stubs.store import Store
from gateway.events import Event

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS invoices (
    number       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL,
    currency     TEXT NOT NULL
);
"""


def invoice_number(number: int) -> str:
    return f"INV-{number:06d}"


class BillingService:
    name: Final = "billing"
    topics: Final = ("orders",)

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate(_SCHEMA)

    def handle(self, event: Event) -> list[Event]:
        if event.type != "order.pending":
            return []
        conn = self.store.conn
        if conn.execute("SELECT 1 FROM invoices WHERE order_id = ?", (event.order_id,)).fetchone():
            return []  # invoiced already under another event id
        amount = event.data.get("amount_cents")
        amount_cents = amount if isinstance(amount, int) else 0
        currency = str(event.data.get("currency", "EUR"))
        cursor = conn.execute(
            "INSERT INTO invoices (order_id, amount_cents, currency) VALUES (?, ?, ?)",
            (event.order_id, amount_cents, currency),
        )
        assert cursor.lastrowid is not None
        data = {
            "invoice_number": invoice_number(cursor.lastrowid),
            "amount_cents": amount_cents,
            "currency": currency,
        }
        return [follow_up(event, "billing.invoiced", data=data)]
