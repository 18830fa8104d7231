"""Who holds how many sockets, across every gateway instance: the basis of
the per-user socket limit (`ORDERPUSH_MAX_SOCKETS_PER_USER`).

`base.py` is the interface, `memory.py` the one-process implementation and
`redis.py` the cluster-wide one; `open_presence` picks one by the sessions
URL, so the limit is shared exactly as widely as the sessions are.
"""

from __future__ import annotations

from gateway.presence.base import PresenceStore
from gateway.presence.factory import open_presence

__all__ = ["PresenceStore", "open_presence"]
