"""The one consume loop: a consumer-group member polling in a background
task, which on any error leaves the group and joins again.

Used by the gateway's pump and by every saga service and the order view of
the stubs. The handler commits what it handled; when it raises (or reading
fails), the consumer's position may be past records that were not
committed, and only a new member starts again from the last commit: so the
loop rejoins (redelivery, never loss), with a doubling backoff between
attempts (`orderpush_core.retry.Backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from orderpush_core.bus.base import Consumer, EventBus, FencedError, Record
from orderpush_core.retry import Backoff

log = logging.getLogger("orderpush.consume")

#: The longest wait between two attempts to rejoin.
REJOIN_MAX_S = 5.0


class ReadAgain(Exception):
    """The batch was handled in parts: the consumer's position is no longer
    where the commits are, so it must rejoin and read on from them."""


class ConsumeLoop:
    def __init__(
        self,
        bus: EventBus,
        topics: Sequence[str],
        group: str,
        on_batch: Callable[[Consumer, list[Record]], Awaitable[None]],
        *,
        transactional: bool = False,
        client_id: str | None = None,
        poll_timeout_ms: int = 500,
        max_records: int = 500,
        retry_backoff_s: float = 0.1,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.topics = tuple(topics)
        self.group = group
        self.on_batch = on_batch
        self.transactional = transactional
        #: A transactional member's transactional id is built from it: stable
        #: across restarts when given (a stubs process's instance id), and at
        #: least across this loop's rejoins, so a rejoin finishes the
        #: transaction the failed member left (see KafkaConsumer._start).
        #: Awaited when stopping, after the last batch and before leaving
        #: the group: work `on_batch` left in flight (a commit) finishes first.
        self.flush = flush
        self.client_id = client_id or (
            f"{group}-{uuid.uuid4().hex[:12]}" if transactional else None
        )
        self.poll_timeout_ms = poll_timeout_ms
        self.max_records = max_records
        self.backoff = Backoff(retry_backoff_s, max(retry_backoff_s, REJOIN_MAX_S))
        #: Errors that made the loop rejoin (a failed read or batch).
        self.errors = 0
        #: Another process took over this member's transactional id: stopped.
        self.fenced = False
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        """stop() was called: a handler should finish what it holds, not take more."""
        return self._stopping.is_set()

    @property
    def consumer(self) -> Consumer | None:
        """The current member (None while rejoining)."""
        return self._consumer

    async def start(self) -> None:
        # Join the group here rather than in the task, so an unreachable bus
        # fails `start()` instead of being logged forever in the background.
        self._consumer = await self._open()
        self._task = asyncio.create_task(self._run(), name=f"consume:{self.group}")

    async def stop(self, timeout_s: float = 5.0, *, leave_timeout_s: float = 5.0) -> None:
        """Finish the batch in hand (bounded by `timeout_s`; 0: cancel it), then
        leave the group (bounded by `leave_timeout_s`)."""
        self._stopping.set()
        if self._task is not None:
            # wait_for cancels the task when the time is up; whatever it had
            # not committed is redelivered to the next member, so that is safe.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout_s)
            self._task = None
        if self.flush is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), leave_timeout_s)
        await self._drop_consumer(leave_timeout_s)

    async def _open(self) -> Consumer:
        return await self.bus.consumer(
            self.topics, self.group, client_id=self.client_id, transactional=self.transactional
        )

    async def _drop_consumer(self, timeout_s: float = 5.0) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.stop(), timeout_s)
            except Exception:
                log.warning("%s: consumer did not stop cleanly", self.group, exc_info=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._consumer is None:
                    self._consumer = await self._open()
                records = await self._consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_records
                )
                if records:
                    await self.on_batch(self._consumer, records)
                self.backoff.reset()
            except asyncio.CancelledError:
                raise
            except FencedError:
                # A zombie: rejoining would fence the process that replaced
                # it, which would fence this one again, and so on.
                self.fenced = True
                log.critical("%s: fenced by a newer process; this one stops consuming", self.group)
                await self._drop_consumer()
                return
            except ReadAgain as again:
                log.info("%s: %s; rejoining to read on from the commits", self.group, again)
                await self._drop_consumer()
            except Exception:
                self.errors += 1
                delay_s = self.backoff.next_delay_s()
                log.exception(
                    "%s: consume loop error; rejoining from the last commit in %.1fs",
                    self.group,
                    delay_s,
                )
                await self._drop_consumer()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay_s)
