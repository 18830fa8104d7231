"""Pick the presence store that matches the sessions URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.presence.base import PresenceStore


def open_presence(
    sessions_url: str, instance_id: str, *, key_prefix: str = "orderpush", lease_ttl_s: float = 30.0
) -> PresenceStore:
    parts = urlsplit(sessions_url)
    if parts.scheme == "memory":
        from gateway.presence.memory import MemoryPresence, shared_board

        return MemoryPresence(shared_board(parts.netloc or "default"), instance_id)
    if parts.scheme in ("redis", "rediss"):
        from gateway.presence.redis import RedisPresence

        return RedisPresence(
            sessions_url, instance_id, key_prefix=key_prefix, lease_ttl_s=lease_ttl_s
        )
    raise ValueError(f"sessions URL {sessions_url!r}: scheme must be memory:// or redis://")
