"""Calls that arrive together go out together: one round trip for many.

A burst of connects makes the same small Redis call for every socket (count
it, lease its user, read its snapshot). Each call alone costs a round trip
and, in the client, packing and parsing a command: with 5,000 sockets
connecting, most of the gateway's time outside the WebSocket handshake
(bench/README.md, "Connecting"). A `Batcher` takes the calls made while its
previous batch is in flight and sends them as the next batch, one call of
`run` for all of them.

Nothing waits for a batch to fill: the first call after a quiet spell goes
out on the next turn of the event loop (with whatever arrived in that same
turn), so a lone call costs one loop iteration more, never a timer. Under
load, batches grow by themselves with the round trip's length. One batch is
in flight at a time, so the calls of one batcher run in submission order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Calls per batch at most (bounds one call's arguments and its reply).
BATCH_MAX: Final = 500


class BatcherStopped(Exception):
    """The batcher's task was cancelled with calls still waiting."""


class Batcher(Generic[T, R]):
    """`submit(item)` returns `run(items)[i]` for its own item, where `items`
    are the calls gathered into one batch. `run` returns one result per item,
    in order; if it raises, every call of the batch raises the same error."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = BATCH_MAX,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self._max_batch = max_batch
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Batches run so far, and the calls they carried (for tests and stats).
        self.batches = 0
        self.calls = 0

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._drain(), name=self._name)
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                # A caller that gave up (cancelled) before its batch left
                # does not get its call made behind its back.
                batch = [(item, future) for item, future in batch if not future.done()]
                if not batch:
                    continue
                self.batches += 1
                self.calls += len(batch)
                try:
                    results = await self._run([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"{self._name}: {len(results)} results for {len(batch)} calls"
                        )
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None
            # Cancelled (the loop is shutting down): nobody may wait forever.
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                if not future.done():
                    future.set_exception(BatcherStopped(self._name))
