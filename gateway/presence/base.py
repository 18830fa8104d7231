"""The presence interface: counted sockets per user, with leases."""

from __future__ import annotations

from typing import Protocol


class PresenceStore(Protocol):
    """Sockets per user. Each entry is a lease that the holding instance
    refreshes; a dead instance's entries expire on their own (self-healing),
    so its users are not locked out for ever."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Drop this instance's entries and stop refreshing them."""
        ...

    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        """Count this socket for `user_id` unless the user already holds
        `limit` sockets (on any instance): then False, and nothing is counted."""
        ...

    async def release(self, user_id: str, connection_id: str) -> None: ...

    async def count(self, user_id: str) -> int:
        """Sockets of `user_id` now counted (expired leases excluded)."""
        ...
