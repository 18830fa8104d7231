"""The embedded default session store: all instances of one process share a
backplane, so routing between instances works (and is tested) without Redis."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from gateway.sessions.base import (
    ZERO_CURSOR,
    DeliverFn,
    Delivery,
    GapFn,
    Incoming,
    OrderState,
    Snapshot,
    cursor_key,
)

#: How many event ids are remembered to drop redelivered events.
SEEN_EVENT_IDS_MAX = 100_000


@dataclass
class _History:
    entries: deque[Delivery] = field(default_factory=deque)
    last_id: tuple[int, int] = (0, 0)
    # Newest id ever trimmed away: a cursor older than it cannot be served.
    max_deleted: tuple[int, int] = (0, 0)


class MemoryBackplane:
    """State shared by the MemorySessionStore instances of one process."""

    def __init__(self) -> None:
        self.histories: dict[str, _History] = {}
        self.views: dict[str, dict[str, OrderState]] = {}
        # event_id -> the cursor it was appended under
        self.seen: OrderedDict[str, str] = OrderedDict()
        self.leases: dict[str, dict[str, float]] = {}
        self.instances: dict[str, DeliverFn] = {}


_backplanes: dict[str, MemoryBackplane] = {}


def shared_backplane(name: str = "default") -> MemoryBackplane:
    """The process-wide backplane called `name` (memory://NAME)."""
    return _backplanes.setdefault(name, MemoryBackplane())


class MemorySessionStore:
    def __init__(
        self,
        backplane: MemoryBackplane,
        instance_id: str,
        *,
        history_max: int = 1000,
        lease_ttl_s: float = 30.0,
    ) -> None:
        self._bp = backplane
        self.instance_id = instance_id
        self.history_max = history_max
        self.lease_ttl_s = lease_ttl_s

    async def start(self, deliver: DeliverFn, on_gap: GapFn | None = None) -> None:
        # In-process routing is a direct call: it cannot lose anything.
        self._bp.instances[self.instance_id] = deliver

    async def stop(self) -> None:
        self._bp.instances.pop(self.instance_id, None)
        for holders in self._bp.leases.values():
            holders.pop(self.instance_id, None)

    # -- history and view ------------------------------------------------

    def _next_id(self, history: _History) -> tuple[int, int]:
        ms = int(time.time() * 1000)
        last_ms, last_seq = history.last_id
        history.last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return history.last_id

    def _append(self, item: Incoming) -> Delivery:
        event = item.event
        first_cursor = self._bp.seen.get(event.event_id)
        if first_cursor is not None:
            return Delivery(
                event.user_id, first_cursor, event, item.raw, item.produced_ms, item.traceparent
            )
        history = self._bp.histories.setdefault(event.user_id, _History())
        ms, seq = self._next_id(history)
        delivery = Delivery(
            event.user_id, f"{ms}-{seq}", event, item.raw, item.produced_ms, item.traceparent
        )
        self._bp.seen[event.event_id] = delivery.cursor
        if len(self._bp.seen) > SEEN_EVENT_IDS_MAX:
            self._bp.seen.popitem(last=False)
        history.entries.append(delivery)
        while len(history.entries) > self.history_max:
            history.max_deleted = cursor_key(history.entries.popleft().cursor)
        if event.is_order_event and event.status is not None and event.version is not None:
            view = self._bp.views.setdefault(event.user_id, {})
            known = view.get(event.order_id)
            if known is None or event.version > known.version:
                view[event.order_id] = OrderState(
                    event.order_id, event.status, event.version, event.occurred_at
                )
        return delivery

    async def publish(self, items: Sequence[Incoming]) -> list[Delivery]:
        deliveries = [self._append(item) for item in items]
        now = time.monotonic()
        remote: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            for instance, expiry in self._bp.leases.get(delivery.user_id, {}).items():
                if instance != self.instance_id and expiry > now:
                    remote.setdefault(instance, []).append(delivery)
        for instance, batch in remote.items():
            deliver = self._bp.instances.get(instance)
            if deliver is not None:
                deliver(batch)
        return deliveries

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        try:
            key = cursor_key(cursor)
        except ValueError:
            return None
        history = self._bp.histories.get(user_id)
        if history is None:
            return [] if key == (0, 0) else None
        if key < history.max_deleted or key > history.last_id:
            return None
        return [d for d in history.entries if cursor_key(d.cursor) > key]

    async def snapshot(self, user_id: str) -> Snapshot:
        history = self._bp.histories.get(user_id)
        cursor = ZERO_CURSOR if history is None else "{}-{}".format(*history.last_id)
        orders = sorted(self._bp.views.get(user_id, {}).values(), key=lambda o: o.order_id)
        return Snapshot(orders, cursor)

    # -- session leases --------------------------------------------------

    async def add_session(self, user_id: str) -> None:
        expiry = time.monotonic() + self.lease_ttl_s
        self._bp.leases.setdefault(user_id, {})[self.instance_id] = expiry

    async def remove_session(self, user_id: str) -> None:
        holders = self._bp.leases.get(user_id)
        if holders is not None:
            holders.pop(self.instance_id, None)
            if not holders:
                del self._bp.leases[user_id]

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        for user_id in user_ids:
            await self.add_session(user_id)

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        now = time.monotonic()
        return {
            user: {i for i, exp in self._bp.leases.get(user, {}).items() if exp > now}
            for user in user_ids
        }
