"""Local connections of one gateway instance and their bounded send queues.

The hub never awaits: `deliver` only checks and enqueues, so a slow socket
can never stall the consumer loop. A socket whose queue is full is closed
with 4009 instead (its client resumes with its cursor and loses nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, ServerMessage, encode, event_frame
from gateway.sessions.base import Delivery, Snapshot, cursor_key

log = logging.getLogger("orderpush.hub")

#: Cursors remembered per connection to drop a delivery sent twice (a
#: redelivery routed again); older duplicates are caught by version.
SENT_CURSORS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Close:
    """Queue item telling the sender to close the socket."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Frame:
    text: str
    #: Bus timestamp of a live event frame (push latency); 0 for anything else.
    produced_ms: int = 0
    is_event: bool = False


QueueItem = Frame | Close


class Connection:
    """One authenticated socket: what it was sent, and what it still has to get.

    While it synchronises (replay or snapshot), live deliveries wait in
    `_pending`; afterwards each delivery goes through `_push`, which drops what
    the client already has: cursors up to the sync horizon (the resume cursor
    or the snapshot's), cursors already sent, and order.* events whose version
    is not newer than the one already shown.

    Live cursors may arrive out of order: two instances append two orders of
    one user to the same history and route them independently. So "already
    sent" is a set of recent cursors, not "older than the newest": the latter
    would drop the event that lost the race.
    """

    def __init__(
        self, user_id: str, connection_id: str, queue_max: int, metrics: GatewayMetrics
    ) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self._queue_max = queue_max
        self._metrics = metrics
        self._versions: dict[str, int] = {}
        self._horizon: tuple[int, int] = (0, 0)
        self._sent: set[str] = set()
        self._sent_order: deque[str] = deque()
        self._newest: tuple[int, int] = (0, 0)
        #: The newest cursor this connection has been sent (or resumed from).
        self.cursor: str | None = None
        #: Where its last sync started: everything up to it the client has.
        self.horizon_cursor: str | None = None
        #: Held while a sync or repair reads history, so two never interleave.
        self.sync_lock = asyncio.Lock()
        self._syncing = True
        self._pending: list[tuple[Delivery, str]] = []
        self.closing: Close | None = None

    # -- queueing --------------------------------------------------------

    def _enqueue(self, frame: Frame) -> None:
        if self.closing is not None:
            return
        if self.queue.qsize() >= self._queue_max:
            self._metrics.slow_closes.inc()
            self.close(CloseCode.CLIENT_TOO_SLOW, "send buffer full")
            return
        self.queue.put_nowait(frame)

    def send(self, message: ServerMessage) -> None:
        self._enqueue(Frame(encode(message)))

    def close(self, code: int, reason: str = "") -> None:
        """Ask the sender to close the socket once; later items are dropped."""
        if self.closing is None:
            self.closing = Close(code, reason)
            self.queue.put_nowait(self.closing)

    # -- events ----------------------------------------------------------

    def offer(self, delivery: Delivery, frame: str) -> None:
        """A live delivery for this connection's user."""
        if self._syncing:
            if len(self._pending) >= self._queue_max:
                self._metrics.slow_closes.inc()
                self.close(CloseCode.CLIENT_TOO_SLOW, "send buffer full")
                return
            self._pending.append((delivery, frame))
            return
        self._push(delivery, frame)

    def _push(self, delivery: Delivery, frame: str, *, live: bool = True) -> bool:
        event = delivery.event
        if delivery.user_id != self.user_id or event.user_id != self.user_id:
            # Never reachable through the hub's routing; kept as the last line
            # of defence for the one rule that must never break.
            log.error("refused to push %s's event to %s", event.user_id, self.user_id)
            return False
        key = cursor_key(delivery.cursor)
        if key <= self._horizon or delivery.cursor in self._sent:
            return False
        self._sent.add(delivery.cursor)
        self._sent_order.append(delivery.cursor)
        if len(self._sent_order) > SENT_CURSORS_MAX:
            self._sent.discard(self._sent_order.popleft())
        if key > self._newest:
            self._newest = key
            self.cursor = delivery.cursor
        if event.is_order_event and event.version is not None:
            known = self._versions.get(event.order_id)
            if known is not None and event.version <= known:
                self._metrics.stale_dropped.inc()
                return False
            self._versions[event.order_id] = event.version
        # A replayed event is as old as the client's absence: timing it would
        # report the outage, not the push path.
        self._enqueue(Frame(frame, delivery.produced_ms if live else 0, is_event=True))
        return True

    def begin_sync(self, cursor: str | None) -> None:
        """Start a replay from `cursor` (None: from a snapshot, seeded later)."""
        self._syncing = True
        self._versions.clear()
        self._sent.clear()
        self._sent_order.clear()
        self._horizon = self._newest = cursor_key(cursor) if cursor else (0, 0)
        self.cursor = self.horizon_cursor = cursor

    def replay(self, deliveries: Iterable[Delivery]) -> int:
        return sum(
            self._push(d, event_frame(d.cursor, d.raw, d.traceparent), live=False)
            for d in deliveries
        )

    def seed(self, snapshot: Snapshot) -> None:
        self._versions = {o.order_id: o.version for o in snapshot.orders}
        self._horizon = self._newest = cursor_key(snapshot.cursor)
        self.cursor = self.horizon_cursor = snapshot.cursor

    def begin_repair(self) -> None:
        """Hold live deliveries while history is re-read to fill a routing
        gap; unlike a sync, what was sent stays known, so only the missing
        events go out."""
        self._syncing = True

    def go_live(self) -> None:
        self._syncing = False
        pending, self._pending = self._pending, []
        for delivery, frame in pending:
            self._push(delivery, frame)


class Hub:
    """user_id -> this instance's connections of that user."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._users: dict[str, set[Connection]] = {}

    def add(self, conn: Connection) -> bool:
        """Register; True when it is the user's first socket on this instance."""
        conns = self._users.setdefault(conn.user_id, set())
        conns.add(conn)
        self._metrics.connections.inc()
        return len(conns) == 1

    def remove(self, conn: Connection) -> bool:
        """Unregister; True when the user has no socket left on this instance."""
        conns = self._users.get(conn.user_id)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self._metrics.connections.dec()
        if not conns:
            del self._users[conn.user_id]
            return True
        return False

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            conns = self._users.get(delivery.user_id)
            if not conns:
                continue
            frame = event_frame(delivery.cursor, delivery.raw, delivery.traceparent)
            for conn in conns:
                conn.offer(delivery, frame)

    def connections(self) -> list[Connection]:
        return [conn for conns in self._users.values() for conn in conns]

    def user_ids(self) -> list[str]:
        return list(self._users)

    def connection_count(self) -> int:
        return sum(len(c) for c in self._users.values())

    def close_all(self, code: int, reason: str = "") -> None:
        for conns in self._users.values():
            for conn in conns:
                conn.close(code, reason)
