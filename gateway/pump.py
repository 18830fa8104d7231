"""The consumer loop: bus -> replay history and routing -> local sockets.

Offsets are committed only after the events before them were handed on
(appended to their users' histories and routed), so a crash means
redelivery, never loss; the store drops redelivered events by event_id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar, overload

from gateway.batch_commits import OrderedCommits
from gateway.envelope import Envelope
from gateway.hub import Hub
from gateway.metrics import GatewayMetrics
from gateway.sessions.base import Delivery, SessionHistory
from orderpush_core.bus.base import (
    Consumer,
    EventBus,
    OutgoingRecord,
    Record,
)
from orderpush_core.bus.poison import dead_letter, sort_records
from orderpush_core.consume import ConsumeLoop
from orderpush_core.events import ORDER_STATE_TOPIC, TOPICS, Event
from orderpush_core.failures import POISON_ATTEMPTS, is_outage
from orderpush_core.retry import Backoff
from orderpush_core.tracing import traceparent_of

log = logging.getLogger("orderpush.pump")

#: The longest wait between two attempts at a step of a batch.
RETRY_MAX_S = 5.0


T = TypeVar("T")


def order_states(events: list[tuple[Record, Event]]) -> list[OutgoingRecord]:
    """The order.* events of a batch as records of the compacted order-state
    topic (keyed by order, so compaction keeps each order's last one; a
    rebuild keeps the highest version anyway)."""
    return [
        OutgoingRecord(ORDER_STATE_TOPIC, event.order_id, record.value)
        for record, event in events
        if event.type.startswith("order.") and event.version is not None
    ]


@dataclass(eq=False)
class _Batch:
    """A batch between its fetch and its commit."""

    records: list[Record]
    events: list[tuple[Record, Event]]
    incoming: list[Envelope]
    states_acked: asyncio.Future[None]
    #: Its append, once sent.
    reply: Awaitable[list[Delivery]] | None = None

    def abandon(self) -> None:
        """Not handed on (the loop rejoins): its order states need not wait."""
        self.states_acked.cancel()
        if isinstance(self.reply, asyncio.Future):
            self.reply.cancel()


class Pump:
    def __init__(
        self,
        bus: EventBus,
        store: SessionHistory,
        hub: Hub,
        metrics: GatewayMetrics,
        *,
        group: str,
        client_id: str,
        batch_max: int = 500,
    ) -> None:
        self.bus = bus
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.group = group
        self.client_id = client_id
        self.batch_max = batch_max
        # Reading fails, or a batch fails for a reason that is not an outage
        # (those are retried inside handle), i.e. a bug: the consumer's
        # position is past this batch, so going on would let the next commit
        # skip it; the loop rejoins the group instead, from the last commit.
        self.loop = ConsumeLoop(
            bus,
            TOPICS,
            group,
            self.handle,
            client_id=client_id,
            max_records=batch_max,
            flush=self.settle,
        )
        self.commits = OrderedCommits()
        self.retries = 0
        #: Records set aside after failing alone POISON_ATTEMPTS times.
        self.set_aside = 0

    @property
    def consumer(self) -> Consumer | None:
        return self.loop.consumer

    @property
    def rejoins(self) -> int:
        return self.loop.errors

    async def start(self) -> None:
        await self.loop.start()

    async def drain(self, timeout_s: float) -> None:
        """Finish the batch in hand (handed on and committed), then leave the
        group, so the partitions move to the other members at once. A batch
        that takes longer than `timeout_s` (its store is down) is cut short:
        it was not committed, so the partitions' new owner reads it again."""
        await self.loop.stop(timeout_s)

    async def stop(self) -> None:
        # No wait for the batch in hand: what it did not commit is redelivered.
        await self.loop.stop(0)

    async def handle(self, consumer: Consumer, records: list[Record]) -> None:
        """Hand a batch on, then commit it. Each step is retried until it
        succeeds: the consumer has moved past these records, so giving up on
        one step and committing a later batch would lose them.

        Batches already fetched behind it are taken here too, so that the
        store and the gateway work at the same time: while the store appends
        batch N, batch N+1 is decoded; as soon as N is appended, N+1's append
        is sent, and N's frames are written to the sockets meanwhile. One
        append is in flight at a time, so they run in batch order.

        The commit (after the order-state ack) runs in the background, in
        batch order, while the next batches are fetched and handed on
        (`gateway.batch_commits`)."""
        current: _Batch | None = None
        following: _Batch | None = None
        try:
            current = await self._prepare(records)
            current.reply = await self._send(current)
            while True:
                following = None
                if not self.loop.stopping:
                    more = await consumer.getmany(timeout_ms=0, max_records=self.batch_max)
                    if more:
                        following = await self._prepare(more)
                deliveries = await self._appended(current)
                if following is not None:
                    following.reply = await self._send(following)
                self.hub.deliver(deliveries)
                self.metrics.events_consumed.inc(len(current.incoming))
                done, current = current, following
                await self.commits.add(consumer, done.records, done.states_acked)
                if current is None:
                    return
        except BaseException:
            for batch in (current, following):
                if batch is not None:
                    batch.abandon()
            raise

    async def _prepare(self, records: list[Record]) -> _Batch:
        """Decode a batch, set its bad records aside, and start writing its
        order states (acknowledged before its commit, not before delivery:
        the sockets need not wait for a produce with acks=all)."""
        batch = sort_records(records)
        if batch.dead_letters:
            letters = batch.dead_letters
            await self._retrying("dead-letter topic", lambda: self.bus.publish(letters))
            self.metrics.poison_records.inc(len(letters) - batch.undecodable_batches)
            self.metrics.undecodable_batches.inc(batch.undecodable_batches)
        incoming = [
            Envelope(
                event=event,
                raw=rec.value,
                produced_ms=rec.timestamp_ms,
                traceparent=traceparent_of(rec.headers),
            )
            for rec, event in batch.events
        ]
        states = order_states(batch.events)
        states_acked = asyncio.ensure_future(
            self._retrying("order-state topic", lambda: self.bus.publish(states))
        )
        return _Batch(records, batch.events, incoming, states_acked)

    async def _send(self, batch: _Batch) -> Awaitable[list[Delivery]]:
        """Put the batch's append on its way; a failure to send is its result."""
        try:
            return await self.store.send_publish(batch.incoming)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed: asyncio.Future[list[Delivery]] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    async def _appended(self, batch: _Batch) -> list[Delivery]:
        """The batch's deliveries once its append is done, retried like any
        step; a batch that keeps failing is handed on record by record."""
        assert batch.reply is not None
        try:
            return await batch.reply
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            first_error: Exception = exc
        deliveries = await self._retrying(
            "session store",
            lambda: self.store.publish(batch.incoming),
            poison_ok=True,
            first_error=first_error,
        )
        if deliveries is None:
            deliveries = await self._one_by_one(batch.events, batch.incoming)
        return deliveries

    @property
    def batches(self) -> int:
        """Batches handed on and committed."""
        return self.commits.batches

    async def settle(self) -> None:
        """Wait for the commits in flight, if any."""
        await self.commits.flush()

    async def _one_by_one(
        self, events: list[tuple[Record, Event]], incoming: list[Envelope]
    ) -> list[Delivery]:
        """The batch kept failing, not for an outage: hand its records on one
        at a time, and set aside those that keep failing alone (a poison
        record), so the rest of the partition goes on."""
        deliveries: list[Delivery] = []
        for (record, _), one in zip(events, incoming, strict=True):
            error: list[BaseException] = []
            got = await self._retrying(
                "session store", partial(self.store.publish, [one]), poison_ok=True, error=error
            )
            if got is not None:
                deliveries.extend(got)
                continue
            failure = error[-1]
            reason = f"recurring error: {type(failure).__name__}: {failure}"[:500]
            log.error(
                "record %s[%d]@%d failed %d times; set aside: %s",
                record.topic,
                record.partition,
                record.offset,
                POISON_ATTEMPTS,
                reason,
            )
            letter = [dead_letter(record, reason)]
            await self._retrying("dead-letter topic", partial(self.bus.publish, letter))
            self.metrics.poison_records.inc()
            self.set_aside += 1
        return deliveries

    @overload
    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T: ...

    @overload
    async def _retrying(
        self,
        what: str,
        step: Callable[[], Awaitable[T]],
        *,
        poison_ok: Literal[True],
        error: list[BaseException] | None = None,
        first_error: Exception | None = None,
    ) -> T | None: ...

    async def _retrying(
        self,
        what: str,
        step: Callable[[], Awaitable[T]],
        *,
        poison_ok: bool = False,
        error: list[BaseException] | None = None,
        first_error: Exception | None = None,
    ) -> T | None:
        """`step()`, retried with backoff. An outage is retried until it ends;
        with `poison_ok`, another error is tried POISON_ATTEMPTS times, then
        None is returned (and the error appended to `error`). `first_error`:
        the first attempt was made elsewhere and failed with it."""
        backoff = Backoff(0.1, RETRY_MAX_S)
        failures = 0
        while True:
            try:
                if first_error is not None:
                    raise first_error
                return await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                first_error = None
                self.retries += 1
                if poison_ok and not is_outage(exc):
                    failures += 1
                    if failures >= POISON_ATTEMPTS:
                        if error is not None:
                            error.append(exc)
                        return None
                    log.warning(
                        "%s failed (%s: %s); attempt %d",
                        what,
                        type(exc).__name__,
                        exc,
                        failures + 1,
                    )
                else:
                    log.warning(
                        "%s unavailable (%s); retrying in %.1fs", what, exc, backoff.delay_s
                    )
                await backoff.wait()

    async def lag(self) -> int:
        consumer = self.consumer
        if consumer is None:
            return 0
        try:
            return await consumer.lag()
        except Exception:
            return -1
