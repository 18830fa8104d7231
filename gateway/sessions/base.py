"""The session store interface: who is connected where, routing between
instances, the per-user replay history and the per-user order view.

Cursors are `<epoch>-<seq>`: `epoch` names one incarnation of a user's
history (the time in ms it was created, so a history that expired, or a
Redis that restarted empty, starts a new one and old cursors are refused
rather than silently served from the wrong history); `seq` counts that
history's events 1, 2, 3, ... with no gaps, assigned in the same atomic step
as the append. `0-0` means "nothing". Cursors compare as (epoch, seq), and a
connection sends each user's events in that order, so a client's last cursor
always means "I have everything up to here".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.envelope import Envelope
from gateway.protocol import OrderState
from orderpush_core.events import Event
from orderpush_core.failures import OutageError

ZERO_CURSOR = "0-0"


class SessionStoreError(OutageError):
    """The session store cannot work: server unreachable, bad URL or option."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """An envelope on its way to one user's sockets, at its place (`cursor`)
    in the user's history."""

    user_id: str
    cursor: str
    envelope: Envelope

    # Read-through accessors: the envelope stays the one holder of these.
    @property
    def event(self) -> Event:
        return self.envelope.event

    @property
    def raw(self) -> bytes:
        return self.envelope.raw

    @property
    def produced_ms(self) -> int:
        return self.envelope.produced_ms

    @property
    def traceparent(self) -> str | None:
        return self.envelope.traceparent


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStats:
    """What a session store did so far, for `/api/stats` and the benches."""

    #: Network round trips (pipelines, scripts, single commands); None for a
    #: store that makes none (the in-process memory store).
    round_trips: int | None
    #: Events appended to a history (redeliveries excluded).
    published_events: int
    #: Times this instance found its own lease gone and wrote its sessions again.
    lease_rewrites: int
    #: Times the route subscription dropped and came back (routes may be lost).
    route_gaps: int
    #: Routed messages (or events in them) dropped as undecodable.
    bad_routes: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    orders: list[OrderState]
    cursor: str
    #: False when the order views were not marked whole when this was read
    #: (`views_marked`, read in the same step): the caller waits for their
    #: rebuild and reads again. Not part of a snapshot's content (equality).
    views_whole: bool = field(default=True, compare=False)


#: Called with deliveries that other instances routed to this one. It must not
#: raise and must not block: it only hands frames to local send queues.
DeliverFn = Callable[[Sequence[Delivery]], None]

#: Called when deliveries routed to this instance may have been lost (its
#: subscription dropped and came back), with the time the loss was noticed in
#: epoch ms: the caller re-reads the histories of its users from before then.
GapFn = Callable[[int], None]


#: Cursor parts beyond this are refused (Redis stream ids are two 64-bit numbers).
CURSOR_PART_MAX = 2**63 - 1


def cursor_key(cursor: str) -> tuple[int, int]:
    """(epoch, seq) of a cursor; raises ValueError for a malformed one."""
    epoch, sep, seq = cursor.partition("-")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        raise ValueError(f"malformed cursor {cursor!r}")
    key = int(epoch), int(seq)
    if max(key) > CURSOR_PART_MAX:
        raise ValueError(f"cursor {cursor!r} out of range")
    return key


def make_cursor(epoch: int, seq: int) -> str:
    return f"{epoch}-{seq}"


class SessionHistory(Protocol):
    """History and view: the per-user replay history (cursors), the order
    view, and routing each appended event to the instances that hold a
    route lease of its user (`SessionLeases`)."""

    async def publish(self, items: Sequence[Envelope]) -> list[Delivery]:
        """Append events to their users' histories and views, and route them.

        Each new event gets its user's next cursor (same epoch, seq + 1),
        atomically with the append. An event still in its user's history
        (same `event_id`, e.g. redelivered after a crash) is not appended
        again: it keeps its first cursor and is routed again, so sockets that
        missed it get it and those that have it drop it by cursor. Each event
        is sent to every *other* instance holding a session of its user; the
        returned deliveries, in input order, are for the caller to push to its
        own sockets. Batched: a fixed number of round trips per call, never one
        per event.
        """
        ...

    async def send_publish(self, items: Sequence[Envelope]) -> Awaitable[list[Delivery]]:
        """`publish`, in two steps: the append is on its way to the store when
        this returns (so the caller can do other work while the store runs
        it), and the awaitable returned gives its deliveries. Appends sent one
        after the other run in that order."""
        ...

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        """The user's events after `cursor`, oldest first and without gaps, or
        None when the cursor cannot be served: malformed, of another epoch
        (another incarnation of the history), newer than the newest event, or
        trimmed past. `0-0` is served while the history still holds seq 1."""
        ...

    async def snapshot(self, user_id: str) -> Snapshot:
        """The user's orders and the cursor of the latest history entry,
        read atomically so that resuming from that cursor misses nothing,
        and whether the views were marked whole at that moment (what
        `views_marked` says; one read instead of two)."""
        ...

    # -- rebuilding the views (gateway/rebuild.py) -------------------------

    async def views_marked(self) -> bool:
        """False when the order views may have been lost (a Redis restarted
        empty, a new cluster) and were not rebuilt yet."""
        ...

    async def begin_rebuild(self) -> str | None:
        """A token if the caller is to rebuild the views; None when another
        instance is rebuilding them."""
        ...

    async def restore_views(self, states: Sequence[Event]) -> int:
        """Write each order.* event's order into its user's view, unless the
        view holds that order at the same or a newer version; how many were
        written."""
        ...

    async def finish_rebuild(self, token: str) -> bool:
        """Mark the views whole, if the rebuild of `token` is still the one
        in progress (False: the store lost its data again meanwhile)."""
        ...


class SessionLeases(Protocol):
    """Route leases: which instances hold sockets of a user, so `publish`
    routes the user's events there. Held per (user, instance), not per
    socket: `gateway/route_leases.py` is their one owner (taken on a user's
    first socket here, dropped with the last, refreshed by its heartbeat).

    Not to be confused with `gateway/presence/` (admission): that counts each
    socket cluster-wide against the per-user socket limit and routes nothing.
    """

    async def add_session(self, user_id: str) -> None:
        """This instance now holds at least one socket of `user_id`."""
        ...

    async def remove_session(self, user_id: str) -> None:
        """This instance holds no socket of `user_id` any more."""
        ...

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        """Heartbeat: this instance is alive and holds sockets of these users.

        `user_ids` is the full set (the hub's users): it is what the store
        writes again when it finds its lease lost, so `refresh_leases([u])`
        is not `add_session(u)` (it would stand for "only u" on Redis).

        A lease is per instance: an instance that stops beating (killed)
        loses all its sessions at once after `lease_ttl_s`; one that beats
        keeps every session it added and did not remove. The per-user entries
        are rewritten here only when they may have been lost, and in bounded
        chunks, so a beat costs about the same with 10 users or 10,000."""
        ...


class SessionStore(SessionHistory, SessionLeases, Protocol):
    """One gateway instance's view of the shared session state: both concerns
    over one backend (one Redis script appends, looks the leases up and
    routes atomically), with their common lifecycle."""

    instance_id: str

    async def start(self, deliver: DeliverFn, on_gap: GapFn | None = None) -> None:
        """Connect, and start handing deliveries routed to this instance to `deliver`.

        Routing is at most once (a subscription can drop); `on_gap` hears of
        every moment it may have lost something, so nothing stays lost.
        """
        ...

    async def stop(self) -> None:
        """Drop this instance's leases and stop listening."""
        ...

    def stats(self) -> SessionStats:
        """Counters of what this store did so far."""
        ...
