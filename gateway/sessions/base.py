"""The session store interface: who is connected where, routing between
instances, the per-user replay history and the per-user order view.

Cursors are history entry ids of the form `<ms>-<seq>` (a Redis stream id);
the in-memory store makes them the same way, so they compare the same way
whichever store produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from gateway.events import Event

ZERO_CURSOR = "0-0"


class SessionStoreError(RuntimeError):
    """The session store cannot work: server unreachable, bad URL or option."""


class OrderState(msgspec.Struct, frozen=True):
    """One order in a snapshot (PROTOCOL.md: `snapshot.orders[]`)."""

    order_id: str
    status: str
    version: int
    updated_at: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event on its way to one user's sockets.

    `raw` is the record value as it came off the bus: it is pushed unchanged
    so fields this gateway does not know still reach clients.
    """

    user_id: str
    cursor: str
    event: Event
    raw: bytes
    produced_ms: int
    #: The record's W3C `traceparent` header, passed on to the client.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    orders: list[OrderState]
    cursor: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """An event handed to `SessionStore.publish`, with its bus timestamp."""

    event: Event
    raw: bytes
    produced_ms: int
    traceparent: str | None = None


#: Called with deliveries that other instances routed to this one. It must not
#: raise and must not block: it only hands frames to local send queues.
DeliverFn = Callable[[Sequence[Delivery]], None]

#: Called when deliveries routed to this instance may have been lost (its
#: subscription dropped and came back), with the time the loss was noticed in
#: epoch ms: the caller re-reads the histories of its users from before then.
GapFn = Callable[[int], None]


def cursor_key(cursor: str) -> tuple[int, int]:
    """Order key of a cursor; raises ValueError for a malformed one."""
    ms, sep, seq = cursor.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"malformed cursor {cursor!r}")
    return int(ms), int(seq)


class SessionStore(Protocol):
    """One gateway instance's view of the shared session state."""

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

    async def publish(self, items: Sequence[Incoming]) -> list[Delivery]:
        """Append events to their users' histories and views, and route them.

        An event appended before (same `event_id`, e.g. redelivered after a
        crash) is not appended again: it keeps its first cursor and is routed
        again, so sockets that missed it because the crash came between append
        and route get it, and those that have it drop it by cursor. Each event
        is sent to every *other* instance holding a session of its user; the
        returned deliveries, in input order, are for the caller to push to its
        own sockets. Batched: a fixed number of round trips per call, never one
        per event.
        """
        ...

    async def history_since(self, user_id: str, cursor: str) -> list[Delivery] | None:
        """The user's events after `cursor`, oldest first, or None when the
        cursor cannot be served (malformed, unknown, or history trimmed past it)."""
        ...

    async def snapshot(self, user_id: str) -> Snapshot:
        """The user's orders and the cursor of the latest history entry,
        read atomically so that resuming from that cursor misses nothing."""
        ...

    async def add_session(self, user_id: str) -> None:
        """This instance now holds at least one socket of `user_id` (a lease)."""
        ...

    async def remove_session(self, user_id: str) -> None:
        """This instance holds no socket of `user_id` any more."""
        ...

    async def refresh_leases(self, user_ids: Collection[str]) -> None:
        """Heartbeat: extend this instance's leases for these users."""
        ...

    async def locate(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """For each user, the instances holding a live session lease."""
        ...
