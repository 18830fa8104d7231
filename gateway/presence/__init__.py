"""Who holds how many sockets, across every gateway instance: the basis of
the per-user socket limit (`ORDERPUSH_MAX_SOCKETS_PER_USER`).

`base.py` is the interface, `memory.py` the one-process implementation and
`redis.py` the cluster-wide one; `open_presence` picks one by the sessions
URL, so the limit is shared exactly as widely as the sessions are.

This is admission, not routing: one entry per *socket*, counted against a
limit. The route leases of `gateway/sessions/` (`SessionLeases`, owned by
`gateway/route_leases.py`) are one entry per (user, instance) and decide
where a user's events are routed; neither store reads the other's entries.
"""

from __future__ import annotations

from gateway.presence.base import PresenceStore
from gateway.presence.factory import open_presence

__all__ = ["PresenceStore", "open_presence"]
