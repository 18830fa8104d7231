"""Pick the session store from a URL: memory:// or redis://HOST:PORT/DB."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.sessions.base import SessionStore


def open_sessions(
    url: str,
    instance_id: str,
    *,
    key_prefix: str = "orderpush",
    history_max: int = 1000,
    lease_ttl_s: float = 30.0,
    history_idle_s: float = 7 * 86_400.0,
) -> SessionStore:
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from gateway.sessions.memory import MemorySessionStore, shared_backplane

        return MemorySessionStore(
            shared_backplane(parts.netloc or "default"),
            instance_id,
            history_max=history_max,
            lease_ttl_s=lease_ttl_s,
            history_idle_s=history_idle_s,
        )
    if parts.scheme in ("redis", "rediss"):
        from gateway.sessions.redis import RedisSessionStore

        return RedisSessionStore(
            url,
            instance_id,
            key_prefix=key_prefix,
            history_max=history_max,
            lease_ttl_s=lease_ttl_s,
            history_idle_s=history_idle_s,
        )
    raise ValueError(f"sessions URL {url!r}: scheme must be memory:// or redis://")
