"""The materialized view: each user's orders, their status and timeline.

It is a read model built from all five topics by its own consumer group,
so it sees payment events before the order service has spoken and the
downstream events in whatever order the partitions deliver them. Two rules
make that converge on the truth:

- every event is stored once, by `event_id` (redelivery is harmless), and
  goes into the order's timeline;
- only an event carrying a newer `version` changes the status, so a late or
  replayed `order.pending` never hides an `order.confirmed`.

Before the first `order.*` event arrives, the status is implied by what is
known (`pending` once a payment was authorized, `cancelled` if it was
declined) with version 0, which any real version supersedes.

The view commits its SQLite transaction before the bus offsets: a crash in
between means redelivery, which the event-id dedupe absorbs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from backend_stubs.runner import set_aside
from backend_stubs.store import Store
from orderpush_core.bus.base import Consumer, EventBus, Record, next_offsets
from orderpush_core.bus.poison import sort_records
from orderpush_core.consume import ConsumeLoop
from orderpush_core.events import TOPICS, Event

log = logging.getLogger("orderpush.stubs.view")

GROUP: Final = "order-view"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS view_orders (
    order_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    items      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS view_orders_by_user ON view_orders (user_id, created_ms);
CREATE TABLE IF NOT EXISTS view_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    order_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_ms INTEGER NOT NULL,
    stage       INTEGER NOT NULL,
    status      TEXT,
    version     INTEGER,
    data        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS view_events_by_order ON view_events (order_id, occurred_ms);
"""

#: Where each event type comes in the saga. Timestamps have millisecond
#: resolution and a cause and its effect often share one; arrival order does
#: not break the tie either (the view reads five topics independently), so
#: the saga's own order does.
_STAGE: Final = {
    "payment.authorized": 0,
    "payment.declined": 0,
    "order.pending": 1,
    "inventory.reserved": 2,
    "inventory.rejected": 2,
    "billing.invoiced": 2,
    "delivery.scheduled": 2,
    "order.confirmed": 3,
    "order.cancelled": 3,
    "payment.refunded": 4,
}
_UNKNOWN_STAGE: Final = 2

#: Status of an order first seen through a non-order event (version 0).
_IMPLIED_STATUS: Final = {"payment.declined": "cancelled", "payment.refunded": "cancelled"}


def _epoch_ms(occurred_at: str) -> int:
    # Event validation guarantees a parseable, zone-aware timestamp; ordering
    # by this number is right even when producers format the zone differently.
    return int(datetime.fromisoformat(occurred_at).timestamp() * 1000)


class OrderView:
    def __init__(
        self,
        bus: EventBus,
        store: Store,
        *,
        group: str = GROUP,
        poll_timeout_ms: int = 500,
    ) -> None:
        self.store = store
        self.bus = bus
        store.migrate(_SCHEMA)
        self.applied = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.errors = 0
        self.loop = ConsumeLoop(
            bus,
            TOPICS,
            group,
            self._on_batch,
            transactional=False,
            poll_timeout_ms=poll_timeout_ms,
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self.loop.stop(timeout_s)

    async def _on_batch(self, consumer: Consumer, records: list[Record]) -> None:
        batch = sort_records(records)
        self.apply_all(event for _, event in batch.events)
        if batch.dead_letters:
            self.dead_letters += len(batch.dead_letters)
            await self.bus.publish([set_aside(d, self.loop.group) for d in batch.dead_letters])
        await consumer.commit(next_offsets(records))

    # -- writing -----------------------------------------------------------

    def apply_all(self, events: Iterable[Event]) -> None:
        for event in events:
            try:
                # One transaction per event: an event the view cannot fold in
                # (a bug, odd data) is skipped alone instead of failing, and
                # being redelivered with, its whole batch forever.
                with self.store.transaction():
                    self.apply(event)
            except Exception:
                self.errors += 1
                log.exception("view: cannot apply %s (%s); skipped", event.event_id, event.type)

    def apply(self, event: Event) -> bool:
        """Fold one event into the view; False if it was already there or refused."""
        conn = self.store.conn
        if conn.execute(
            "SELECT 1 FROM view_events WHERE event_id = ?", (event.event_id,)
        ).fetchone():
            self.duplicates += 1
            return False
        row = conn.execute(
            "SELECT * FROM view_orders WHERE order_id = ?", (event.order_id,)
        ).fetchone()
        if row is not None and row["user_id"] != event.user_id:
            # An order belongs to the user of its first event. Letting a later
            # event move it would show one user's order to another.
            log.warning(
                "event %s claims order %s for another user; ignored",
                event.event_id,
                event.order_id,
            )
            return False
        at_ms = _epoch_ms(event.occurred_at)
        items = event.data.get("items")
        items_json = json.dumps(items) if isinstance(items, list) else None
        versioned = event.status is not None and event.version is not None
        conn.execute(
            "INSERT INTO view_events"
            " (event_id, order_id, type, occurred_at, occurred_ms, stage, status, version, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                event.order_id,
                event.type,
                event.occurred_at,
                at_ms,
                _STAGE.get(event.type, _UNKNOWN_STAGE),
                event.status,
                event.version,
                json.dumps(event.data),
            ),
        )
        if row is None:
            status, version = (
                (event.status, event.version)
                if versioned
                else (_IMPLIED_STATUS.get(event.type, "pending"), 0)
            )
            conn.execute(
                "INSERT INTO view_orders (order_id, user_id, status, version, items,"
                " created_at, created_ms, updated_at, updated_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.order_id,
                    event.user_id,
                    status,
                    version,
                    items_json or "[]",
                    event.occurred_at,
                    at_ms,
                    event.occurred_at,
                    at_ms,
                ),
            )
        else:
            if versioned and event.version is not None and event.version > row["version"]:
                conn.execute(
                    "UPDATE view_orders SET status = ?, version = ? WHERE order_id = ?",
                    (event.status, event.version, event.order_id),
                )
            if items_json is not None and row["items"] == "[]":
                conn.execute(
                    "UPDATE view_orders SET items = ? WHERE order_id = ?",
                    (items_json, event.order_id),
                )
            # Events arrive out of order across topics: keep the extremes.
            if at_ms < row["created_ms"]:
                conn.execute(
                    "UPDATE view_orders SET created_at = ?, created_ms = ? WHERE order_id = ?",
                    (event.occurred_at, at_ms, event.order_id),
                )
            if at_ms > row["updated_ms"]:
                conn.execute(
                    "UPDATE view_orders SET updated_at = ?, updated_ms = ? WHERE order_id = ?",
                    (event.occurred_at, at_ms, event.order_id),
                )
        self.applied += 1
        return True

    # -- reading -----------------------------------------------------------

    def list_orders(self, user_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The user's orders, newest first."""
        rows = self.store.conn.execute(
            "SELECT * FROM view_orders WHERE user_id = ?"
            " ORDER BY created_ms DESC, rowid DESC LIMIT ?",
            (user_id, limit),
        ).fetchall()
        return [_order(row) for row in rows]

    def get_order(self, user_id: str, order_id: str) -> dict[str, Any] | None:
        """One order with its timeline, or None if unknown or someone else's."""
        row = self.store.conn.execute(
            "SELECT * FROM view_orders WHERE order_id = ? AND user_id = ?", (order_id, user_id)
        ).fetchone()
        if row is None:
            return None
        events = self.store.conn.execute(
            "SELECT * FROM view_events WHERE order_id = ? ORDER BY occurred_ms, stage, seq",
            (order_id,),
        ).fetchall()
        return {**_order(row), "timeline": [_timeline_entry(e) for e in events]}


def _order(row: Any) -> dict[str, Any]:
    return {
        "order_id": row["order_id"],
        "status": row["status"],
        "version": row["version"],
        "items": json.loads(row["items"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _timeline_entry(row: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "event_id": row["event_id"],
        "type": row["type"],
        "occurred_at": row["occurred_at"],
    }
    if row["status"] is not None:
        entry["status"] = row["status"]
    if row["version"] is not None:
        entry["version"] = row["version"]
    entry["data"] = json.loads(row["data"])
    return entry
