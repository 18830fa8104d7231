"""The embedded default session store: all instances of one process share a
backplane, so routing between instances works (and is tested) without Redis.

It keeps the Redis store's rules (sessions/base.py): per-user histories with
gap-free `<epoch>-<seq>` cursors, dedupe by the event ids still in the
history, idle expiry, and per-instance leases.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field

from gateway.envelope import Envelope
from gateway.protocol import OrderState
from gateway.sessions.base import (
    ZERO_CURSOR,
    DeliverFn,
    Delivery,
    GapFn,
    SessionStats,
    Snapshot,
    cursor_key,
    make_cursor,
)
from orderpush_core.events import Event

#: Default idle time after which a user's history and view are dropped.
HISTORY_IDLE_S = 7 * 86_400.0


@dataclass
class _History:
    epoch: int
    seq: int = 0
    entries: deque[Delivery] = field(default_factory=deque)
    #: event_id -> cursor, for the events still in `entries`: the dedupe window.
    ids: dict[str, str] = field(default_factory=dict)


@dataclass
class _User:
    history: _History | None = None
    view: dict[str, OrderState] = field(default_factory=dict)
    touched: float = 0.0  # monotonic time of the last append


class MemoryBackplane:
    """State shared by the MemorySessionStore instances of one process."""

    def __init__(self) -> None:
        self.users: dict[str, _User] = {}
        #: user_id -> instances holding a session of the user
        self.sessions: dict[str, set[str]] = {}
        #: instance_id -> expiry (monotonic) of its lease
        self.alive: dict[str, float] = {}
        self.instances: dict[str, DeliverFn] = {}
        self.last_epoch = 0
        self.last_sweep = 0.0

    def new_epoch(self) -> int:
        # Epochs only grow, even within one millisecond, so that a history
        # created again is never mistaken for the one before.
        self.last_epoch = max(int(time.time() * 1000), self.last_epoch + 1)
        return self.last_epoch


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
        history_idle_s: float = HISTORY_IDLE_S,
    ) -> None:
        self._bp = backplane
        self.instance_id = instance_id
        self.history_max = history_max
        self.lease_ttl_s = lease_ttl_s
        self.history_idle_s = history_idle_s
        self._published_events = 0
        self._leases = MemoryLeases(backplane, instance_id, lease_ttl_s)

    async def start(self, deliver: DeliverFn, on_gap: GapFn | None = None) -> None:
        # In-process routing is a direct call: it cannot lose anything.
        self._bp.instances[self.instance_id] = deliver
        self._leases.beat()

    def stats(self) -> SessionStats:
        # In-process: no round trips, no routes to lose, a lease never lost.
        return SessionStats(
            round_trips=None,
            published_events=self._published_events,
            lease_rewrites=0,
            route_gaps=0,
            bad_routes=0,
        )

    async def stop(self) -> None:
        self._bp.instances.pop(self.instance_id, None)
        self._leases.drop_all()

    # -- history and view ------------------------------------------------

    def _user(self, user_id: str) -> _User | None:
        """The user's state, or None when it never existed or went idle."""
        user = self._bp.users.get(user_id)
        if user is not None and time.monotonic() - user.touched > self.history_idle_s:
            del self._bp.users[user_id]
            return None
        return user

    def _sweep(self) -> None:
        """Drop idle users now and then, so memory stays bounded."""
        now = time.monotonic()
        if now - self._bp.last_sweep < min(60.0, self.history_idle_s / 4):
            return
        self._bp.last_sweep = now
        idle = [u for u, s in self._bp.users.items() if now - s.touched > self.history_idle_s]
        for user_id in idle:
            del self._bp.users[user_id]

    def _append(self, item: Envelope) -> Delivery:
        event = item.event
        user = self._user(event.user_id) or self._bp.users.setdefault(event.user_id, _User())
        user.touched = time.monotonic()
        history = user.history
        if history is None:
            history = user.history = _History(self._bp.new_epoch())
        first_cursor = history.ids.get(event.event_id)
        if first_cursor is not None:
            return Delivery(user_id=event.user_id, cursor=first_cursor, envelope=item)
        history.seq += 1
        self._published_events += 1
        cursor = make_cursor(history.epoch, history.seq)
        delivery = Delivery(user_id=event.user_id, cursor=cursor, envelope=item)
        history.ids[event.event_id] = cursor
        history.entries.append(delivery)
        while len(history.entries) > self.history_max:
            gone = history.entries.popleft()
            history.ids.pop(gone.event.event_id, None)
        if event.is_order_event and event.status is not None and event.version is not None:
            known = user.view.get(event.order_id)
            if known is None or event.version > known.version:
                user.view[event.order_id] = OrderState(
                    event.order_id, event.status, event.version, event.occurred_at
                )
        return delivery

    async def send_publish(self, items: Sequence[Envelope]) -> Awaitable[list[Delivery]]:
        # In process: done at once, nothing to overlap.
        done: asyncio.Future[list[Delivery]] = asyncio.get_running_loop().create_future()
        done.set_result(await self.publish(items))
        return done

    async def publish(self, items: Sequence[Envelope]) -> list[Delivery]:
        self._sweep()
        deliveries = [self._append(item) for item in items]
        remote: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            for instance in self._leases.holders(delivery.user_id):
                if instance != self.instance_id:
                    remote.setdefault(instance, []).append(delivery)
        for instance, batch in remote.items():
            deliver = self._bp.instances.get(instance)
            if deliver is not None:
                deliver(batch)
        return deliveries

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        try:
            epoch, seq = cursor_key(cursor)
        except ValueError:
            return None
        user = self._user(user_id)
        history = user.history if user is not None else None
        if history is None:
            return [] if (epoch, seq) == (0, 0) else None
        if (epoch, seq) == (0, 0):
            epoch = history.epoch
        first_seq = history.seq - len(history.entries) + 1
        if epoch != history.epoch or not first_seq - 1 <= seq <= history.seq:
            return None
        return list(history.entries)[seq - first_seq + 1 :]

    async def snapshot(self, user_id: str) -> Snapshot:
        user = self._user(user_id)
        if user is None:
            return Snapshot([], ZERO_CURSOR)
        history = user.history
        cursor = ZERO_CURSOR if history is None else make_cursor(history.epoch, history.seq)
        return Snapshot(sorted(user.view.values(), key=lambda o: o.order_id), cursor)

    # -- rebuilding the views: nothing to rebuild in one process ----------

    async def views_marked(self) -> bool:
        return True

    async def begin_rebuild(self) -> str | None:
        return "memory"

    async def restore_views(self, states: Sequence[Event]) -> int:
        written = 0
        for event in states:
            if event.status is None or event.version is None:
                continue
            user = self._user(event.user_id)
            if user is None:
                user = self._bp.users[event.user_id] = _User(touched=time.monotonic())
            known = user.view.get(event.order_id)
            if known is None or known.version < event.version:
                user.view[event.order_id] = OrderState(
                    event.order_id, event.status, event.version, event.occurred_at
                )
                written += 1
        return written

    async def finish_rebuild(self, token: str) -> bool:
        return True

    # -- route leases (MemoryLeases, below) -------------------------------

    async def add_session(self, user_id: str) -> None:
        await self._leases.add_session(user_id)

    async def remove_session(self, user_id: str) -> None:
        await self._leases.remove_session(user_id)

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        await self._leases.refresh_leases(user_ids)

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """For each user, the live instances holding a route lease of the user.
        A helper for tests, no part of the `SessionLeases` interface."""
        return await self._leases.locate(user_ids)


class MemoryLeases:
    """Route leases (`SessionLeases`) on a backplane: which instances hold
    sockets of a user, each counting while its instance's lease lives."""

    def __init__(self, backplane: MemoryBackplane, instance_id: str, lease_ttl_s: float) -> None:
        self._bp = backplane
        self.instance_id = instance_id
        self.lease_ttl_s = lease_ttl_s

    def drop_all(self) -> None:
        self._bp.alive.pop(self.instance_id, None)
        for holders in self._bp.sessions.values():
            holders.discard(self.instance_id)

    def beat(self) -> None:
        self._bp.alive[self.instance_id] = time.monotonic() + self.lease_ttl_s

    def holders(self, user_id: str) -> set[str]:
        now = time.monotonic()
        return {i for i in self._bp.sessions.get(user_id, ()) if self._bp.alive.get(i, 0.0) > now}

    async def add_session(self, user_id: str) -> None:
        self._bp.sessions.setdefault(user_id, set()).add(self.instance_id)

    async def remove_session(self, user_id: str) -> None:
        holders = self._bp.sessions.get(user_id)
        if holders is not None:
            holders.discard(self.instance_id)
            if not holders:
                del self._bp.sessions[user_id]

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        for user_id in user_ids:
            await self.add_session(user_id)
        self.beat()

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        return {user: self.holders(user) for user in user_ids}
