"""Each stub service's own SQLite database, and its exactly-once ledger.

A service records, in the same SQLite transaction as its state change, the
input event it handled and the records that input produced. When the bus
redelivers that input (a crash between the SQLite commit and the Kafka
commit, a rebalance, a duplicate from an at-least-once producer), the
service re-sends the recorded records, with their original event ids,
instead of deciding again: downstream consumers dedupe by event id, and a
decision (an invoice number, a delivery slot, a version) is never taken
twice.

The stdlib sqlite3 module is synchronous; every operation here touches a
handful of rows, so running it on the event loop is cheaper than a thread
hop would be.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from orderpush_core.bus.base import OutgoingRecord

MEMORY: Final = ":memory:"

_LEDGER_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS processed (
    event_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS outputs (
    event_id TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    topic    TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    BLOB NOT NULL,
    headers  TEXT NOT NULL,
    PRIMARY KEY (event_id, seq)
);
-- Where each handled input was read (topic/partition/offset): a second
-- record with the same event id elsewhere is another copy (a producer's
-- retry), not the redelivery of an input whose transaction did not commit.
CREATE TABLE IF NOT EXISTS sources (
    event_id TEXT PRIMARY KEY,
    source   TEXT NOT NULL
);
"""


class Store:
    """One SQLite connection in autocommit mode; `transaction()` groups writes."""

    def __init__(self, path: str | Path = MEMORY) -> None:
        self.path = str(path)
        # isolation_level=None: no implicit transactions, so BEGIN/COMMIT are
        # exactly where `transaction()` puts them and nothing else commits.
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        if self.path != MEMORY:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_LEDGER_SCHEMA)
        self._depth = 0

    @classmethod
    def open(cls, data_dir: Path | None, name: str) -> Store:
        """`<data_dir>/<name>.sqlite3`, or a private in-memory database."""
        if data_dir is None:
            return cls(MEMORY)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / f"{name}.sqlite3")

    def migrate(self, schema: str) -> None:
        """Create the service's tables (idempotent `CREATE ... IF NOT EXISTS`)."""
        self.conn.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises.

        Nested use joins the outer transaction, so a helper may open one
        without knowing whether its caller already did.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    # -- the exactly-once ledger --------------------------------------------

    def recorded_outputs(self, event_id: str) -> list[OutgoingRecord] | None:
        """What handling `event_id` produced, or None if it was never handled."""
        if self.conn.execute("SELECT 1 FROM processed WHERE event_id = ?", (event_id,)).fetchone():
            rows = self.conn.execute(
                "SELECT topic, key, value, headers FROM outputs WHERE event_id = ? ORDER BY seq",
                (event_id,),
            ).fetchall()
            return [
                OutgoingRecord(
                    row["topic"], row["key"], bytes(row["value"]), decode_headers(row["headers"])
                )
                for row in rows
            ]
        return None

    def source_of(self, event_id: str) -> str | None:
        """Where the handled input `event_id` was read (None: not recorded)."""
        row = self.conn.execute(
            "SELECT source FROM sources WHERE event_id = ?", (event_id,)
        ).fetchone()
        return None if row is None else str(row["source"])

    def record_outputs(
        self, event_id: str, outputs: Sequence[OutgoingRecord], source: str | None = None
    ) -> None:
        """Mark `event_id` handled with these outputs (call inside `transaction()`),
        read at `source` (`topic/partition/offset`)."""
        self.conn.execute("INSERT INTO processed (event_id) VALUES (?)", (event_id,))
        if source is not None:
            self.conn.execute(
                "INSERT INTO sources (event_id, source) VALUES (?, ?)", (event_id, source)
            )
        self.conn.executemany(
            "INSERT INTO outputs (event_id, seq, topic, key, value, headers)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (event_id, seq, out.topic, out.key, out.value, encode_headers(out.headers))
                for seq, out in enumerate(outputs)
            ],
        )

    def close(self) -> None:
        self.conn.close()


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    # Header values are bytes; latin-1 maps every byte to one code point and
    # back, so any value survives the trip through a JSON string.
    return json.dumps([[name, value.decode("latin-1")] for name, value in headers])


def decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value.encode("latin-1")) for name, value in json.loads(text))
