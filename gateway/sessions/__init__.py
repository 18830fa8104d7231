"""Session map, cross-instance routing and per-user replay history.

Two interfaces (`base.py`): `SessionHistory` (history, view, routing what is
appended) and `SessionLeases` (route leases: which instances hold a user's
sockets; owned by `gateway/route_leases.py`). One backend implements both
(`MemorySessionStore`, `RedisSessionStore`: `SessionStore`), since one Redis
script appends, looks the leases up and routes atomically. Not the same as
`gateway/presence/` (admission: sockets counted per user against a limit).

`open_sessions(url, instance_id)` picks the implementation by URL scheme:
`memory://` (embedded default) or `redis://HOST:PORT/DB` (needs the `redis`
extra, imported only then).
"""

from __future__ import annotations

from gateway.envelope import Envelope
from gateway.protocol import OrderState
from gateway.sessions.base import (
    DeliverFn,
    Delivery,
    GapFn,
    SessionHistory,
    SessionLeases,
    SessionStats,
    SessionStore,
    SessionStoreError,
    Snapshot,
    cursor_key,
)
from gateway.sessions.factory import open_sessions

__all__ = [
    "DeliverFn",
    "Delivery",
    "Envelope",
    "GapFn",
    "OrderState",
    "SessionHistory",
    "SessionLeases",
    "SessionStats",
    "SessionStore",
    "SessionStoreError",
    "Snapshot",
    "cursor_key",
    "open_sessions",
]
