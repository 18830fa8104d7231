"""Session map, cross-instance routing and per-user replay history.

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
    "SessionStats",
    "SessionStore",
    "SessionStoreError",
    "Snapshot",
    "cursor_key",
    "open_sessions",
]
