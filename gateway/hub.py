"""Local connections of one gateway instance and their bounded send queues.

The hub never awaits: `deliver` only checks and enqueues, so a slow socket
can never stall the consumer loop. A socket whose queue is full is closed
with 4009 instead (its client resumes with its cursor and loses nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.direct_frames import FrameWriter
from gateway.gc_policy import ConnectFreezer
from gateway.metrics import GatewayMetrics
from gateway.protocol import CloseCode, ServerMessage, encode, event_frame
from gateway.send_buffer import SendBuffer
from gateway.sessions.base import Delivery, Snapshot, cursor_key, make_cursor

log = logging.getLogger("orderpush.hub")

#: How long an event that arrived ahead of its predecessor waits for it (two
#: instances route events of one user independently) before the gap is
#: filled from history.
GAP_WAIT_S = 0.25


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
_Held = tuple[Delivery, str, bool]  # delivery, frame, live


class Connection:
    """One authenticated socket: what it was sent, and what it still has to get.

    Its position is a cursor `<epoch>-<seq>`: it has handed the client every
    event of the user's history up to it, in order (sessions/base.py). A
    delivery is sent only when it is the next one (seq + 1); one that is
    older is a duplicate and dropped; one further ahead is held until the
    missing ones arrive, at most `gap_wait_s`, after which `on_gap` is asked
    to fill the gap from history. So the client never gets N+1 before N, and
    its last cursor always means "I have everything up to here".

    While it synchronises (replay, snapshot or fill), live deliveries wait in
    `_pending` and go through the same rule afterwards. Independently, an
    order.* event whose version is not newer than the one already shown is
    not sent (it still moves the position on).
    """

    def __init__(
        self,
        user_id: str,
        connection_id: str,
        queue_max: int,
        metrics: GatewayMetrics,
        *,
        on_gap: Callable[[Connection], None] | None = None,
        gap_wait_s: float = GAP_WAIT_S,
    ) -> None:
        self.user_id = user_id
        self.connection_id = connection_id
        self.queue: SendBuffer[QueueItem] = SendBuffer()
        #: Writes a frame to the socket at once (gateway/direct_frames.py);
        #: used while nothing is queued before it, so the order holds.
        self.writer: FrameWriter | None = None
        #: The sender task holds a frame it has not finished writing.
        self.sender_busy = False
        self._queue_max = queue_max
        self._metrics = metrics
        self._on_gap = on_gap
        self._gap_wait_s = gap_wait_s
        self._gap_timer: asyncio.TimerHandle | None = None
        self._versions: dict[str, int] = {}
        self._epoch = 0
        self._seq = 0
        self._synced = False
        #: Deliveries ahead of the position, by seq, waiting for the gap.
        self._ahead: dict[int, _Held] = {}
        #: Held while a sync or fill reads history, so two never interleave.
        self.sync_lock = asyncio.Lock()
        self._syncing = True
        self._pending: list[tuple[Delivery, str]] = []
        self.closing: Close | None = None

    @property
    def cursor(self) -> str | None:
        """Everything up to here was handed to the client (None before the first sync)."""
        return make_cursor(self._epoch, self._seq) if self._synced else None

    @property
    def has_gap(self) -> bool:
        return bool(self._ahead)

    # -- queueing --------------------------------------------------------

    def _written(self, text: str) -> bool:
        """Written straight to the socket: nothing is queued before it and
        the transport takes writes (gateway/direct_frames.py)."""
        return (
            self.writer is not None
            and self.closing is None
            and not self.sender_busy
            and self.queue.empty()
            and self.writer(text)
        )

    def _enqueue_event(self, text: str, produced_ms: int) -> None:
        # No Frame object in the common case (once per frame).
        if self._written(text):
            self._metrics.event_frame_sent(produced_ms)
        else:
            self._queue(Frame(text, produced_ms, is_event=True))

    def _queue(self, frame: Frame) -> None:
        if self.closing is not None:
            return
        if self.queue.qsize() >= self._queue_max:
            self._metrics.slow_closes.inc()
            self.close(CloseCode.CLIENT_TOO_SLOW, "send buffer full")
            return
        self.queue.put_nowait(frame)

    def send(self, message: ServerMessage) -> None:
        text = encode(message)
        if not self._written(text):
            self._queue(Frame(text))

    def close(self, code: int, reason: str = "") -> None:
        """Ask the sender to close the socket once; later items are dropped."""
        self._cancel_gap_timer()
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

    def _push(self, delivery: Delivery, frame: str, *, live: bool = True) -> int:
        """Apply the cursor rule; returns how many events were sent."""
        event = delivery.event
        if delivery.user_id != self.user_id or event.user_id != self.user_id:
            # Never reachable through the hub's routing; kept as the last line
            # of defence for the one rule that must never break.
            log.error("refused to push %s's event to %s", event.user_id, self.user_id)
            return 0
        try:
            epoch, seq = cursor_key(delivery.cursor)
        except ValueError:
            log.error("refused a delivery with cursor %r", delivery.cursor)
            return 0
        if epoch != self._epoch:
            if epoch < self._epoch:
                return 0  # from a history that has since been replaced
            # A new incarnation of the user's history (it expired, or Redis
            # started empty): follow it from its beginning.
            self._epoch, self._seq = epoch, 0
            self._ahead.clear()
            self._cancel_gap_timer()
        if seq <= self._seq:
            return 0  # already sent (or covered by the sync)
        if seq > self._seq + 1:
            if len(self._ahead) >= self._queue_max:
                self._metrics.slow_closes.inc()
                self.close(CloseCode.CLIENT_TOO_SLOW, "send buffer full")
                return 0
            self._ahead.setdefault(seq, (delivery, frame, live))
            self._arm_gap_timer()
            return 0
        sent = self._send_next(delivery, frame, live)
        while (held := self._ahead.pop(self._seq + 1, None)) is not None:
            sent += self._send_next(*held)
        if not self._ahead:
            self._cancel_gap_timer()
        return sent

    def _send_next(self, delivery: Delivery, frame: str, live: bool) -> int:
        self._seq += 1
        event = delivery.event
        if event.is_order_event and event.version is not None:
            known = self._versions.get(event.order_id)
            if known is not None and event.version <= known:
                self._metrics.stale_dropped.inc()
                return 0
            self._versions[event.order_id] = event.version
        # A replayed event is as old as the client's absence: timing it would
        # report the outage, not the push path.
        self._enqueue_event(frame, delivery.produced_ms if live else 0)
        return 1

    def _arm_gap_timer(self) -> None:
        if self._gap_timer is None and self._on_gap is not None and self.closing is None:
            loop = asyncio.get_running_loop()
            self._gap_timer = loop.call_later(self._gap_wait_s, self._gap_expired)

    def _cancel_gap_timer(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _gap_expired(self) -> None:
        self._gap_timer = None
        if self._ahead and self.closing is None and self._on_gap is not None:
            self._metrics.cursor_gap_fills.inc()
            self._on_gap(self)

    def _reset(self, cursor: str) -> None:
        self._epoch, self._seq = cursor_key(cursor)
        self._synced = True
        self._ahead.clear()
        self._cancel_gap_timer()

    def begin_sync(self, cursor: str | None) -> None:
        """Start a replay from `cursor` (None: from a snapshot, seeded later)."""
        self._syncing = True
        self._versions.clear()
        self._reset(cursor or "0-0")
        self._synced = cursor is not None

    def replay(self, deliveries: Iterable[Delivery], *, live: bool = False) -> int:
        """Push history entries (oldest first); returns how many were sent."""
        return sum(
            self._push(d, event_frame(d.cursor, d.raw, d.traceparent), live=live)
            for d in deliveries
        )

    def seed(self, snapshot: Snapshot) -> None:
        self._versions = {o.order_id: o.version for o in snapshot.orders}
        self._reset(snapshot.cursor)

    def begin_fill(self) -> None:
        """Hold live deliveries while history is re-read to fill a gap; unlike
        a sync, the position and versions stay, so only what is missing goes out."""
        self._syncing = True

    def go_live(self) -> None:
        self._syncing = False
        pending, self._pending = self._pending, []
        for delivery, frame in pending:
            self._push(delivery, frame)
        if self._ahead:
            self._arm_gap_timer()


class Hub:
    """user_id -> this instance's connections of that user."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._users: dict[str, set[Connection]] = {}
        self._freezer = ConnectFreezer()

    def add(self, conn: Connection) -> bool:
        """Register; True when it is the user's first socket on this instance."""
        conns = self._users.setdefault(conn.user_id, set())
        conns.add(conn)
        self._metrics.connections.inc()
        self._freezer.added()
        return len(conns) == 1

    def remove(self, conn: Connection) -> bool:
        """Unregister; True when the user has no socket left on this instance."""
        conns = self._users.get(conn.user_id)
        if conns is None or conn not in conns:
            return False
        conns.discard(conn)
        self._metrics.connections.dec()
        self._freezer.removed()
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
