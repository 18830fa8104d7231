"""A connection's send buffer: what the hub handed it, in order, for its one sender task.

It replaces an `asyncio.Queue` per socket. A Queue keeps three deques
(items, getters, putters) plus an Event with a fourth for `join()`, about
3 KB per socket that an idle socket never uses (bench/README.md, "Idle
sockets"). Here there is one consumer (the sender task in
gateway/endpoint.py) and producers never wait (the connection checks the
bound and closes with 4009 instead), so a deque, created only while items
wait, and one future, created only while the sender waits, are enough.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class SendBuffer(Generic[T]):
    """Unbounded FIFO with a single awaiting consumer; the caller enforces any bound."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> T:
        items = self._items
        if not items:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            # An idle socket keeps no deque (~600 B each).
            self._items = None
        return item

    async def get(self) -> T:
        """The next item, waiting for one; one consumer at a time."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("SendBuffer has one consumer")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self.get_nowait()
