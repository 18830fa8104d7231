"""Presence in one process (the embedded default, `memory://` sessions).

Gateways in one process that share a `memory://NAME` session store share the
presence of that name too, as they would share Redis.
"""

from __future__ import annotations

from collections import defaultdict


class _Board:
    def __init__(self) -> None:
        self.sockets: defaultdict[str, set[str]] = defaultdict(set)


_boards: dict[str, _Board] = {}


def shared_board(name: str) -> _Board:
    return _boards.setdefault(name, _Board())


class MemoryPresence:
    def __init__(self, board: _Board, instance_id: str) -> None:
        self.board = board
        self.instance_id = instance_id
        self._held: set[tuple[str, str]] = set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for user_id, member in list(self._held):
            self.board.sockets[user_id].discard(member)
        self._held.clear()

    def _member(self, connection_id: str) -> str:
        return f"{self.instance_id}/{connection_id}"

    async def acquire(self, user_id: str, connection_id: str, limit: int) -> bool:
        held = self.board.sockets[user_id]
        member = self._member(connection_id)
        if member not in held and len(held) >= limit:
            return False
        held.add(member)
        self._held.add((user_id, member))
        return True

    async def release(self, user_id: str, connection_id: str) -> None:
        member = self._member(connection_id)
        self._held.discard((user_id, member))
        held = self.board.sockets.get(user_id)
        if held is not None:
            held.discard(member)
            if not held:
                del self.board.sockets[user_id]

    async def count(self, user_id: str) -> int:
        return len(self.board.sockets.get(user_id, ()))
