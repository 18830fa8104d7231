"""The billing service: issues one invoice per new order.

Invoice numbers come from a SQLite sequence, so they are exactly the kind
of decision that must not be taken twice: a redelivered `order.pending`
gets the recorded `billing.invoiced` back (see runner.py), never a second
number.
"""

from __future__ import annotations

from typing import Final

from backend_stubs.new_order import NewOrderService
from backend_stubs.runner import follow_up
from orderpush_core.events import Event

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


class BillingService(NewOrderService):
    name = "billing"
    table = "invoices"
    schema = _SCHEMA

    def act(self, event: Event) -> list[Event]:
        conn = self.store.conn
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
