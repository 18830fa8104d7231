"""The one owner of this instance's route leases (`SessionLeases`).

A route lease says "this instance holds sockets of user U": the session
store routes U's events here while it lives. It is per (user, instance), not
per socket, so it is taken when the hub registers a user's first socket on
this instance and dropped when the hub unregisters the last one; the
heartbeat keeps all of them alive. Nothing else touches the leases.

This is not admission (`gateway/presence/`): that counts every socket
cluster-wide against `max_sockets_per_user` and routes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.hub import Connection, Hub
from gateway.sessions.base import SessionLeases

log = logging.getLogger(__name__)


class RouteLeases:
    def __init__(self, hub: Hub, leases: SessionLeases) -> None:
        self._hub = hub
        self._leases = leases

    @contextlib.asynccontextmanager
    async def holding(self, conn: Connection) -> AsyncIterator[None]:
        """Register `conn` in the hub for the block, with its user's lease
        taken on the user's first socket here and dropped with the last.

        A failure to take the lease propagates (the socket cannot be routed
        to); the socket is unregistered either way."""
        first_here = self._hub.add(conn)
        try:
            if first_here:
                await self._leases.add_session(conn.user_id)
            yield
        finally:
            if self._hub.remove(conn):
                # A lease left behind expires with the instance's, or is
                # rewritten away by the next beat's full set.
                with contextlib.suppress(Exception):
                    await self._leases.remove_session(conn.user_id)

    async def refresh(self) -> None:
        """One heartbeat: every user with a socket here, and only those."""
        await self._leases.refresh_leases(self._hub.user_ids())

    async def keep_alive(self, interval_s: float) -> None:
        """Refresh every `interval_s` until cancelled; a failed beat is logged
        and the next one tries again."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("lease refresh failed")
