"""The consume-transform-produce loop every saga service runs.

One transactional consumer per service (its own consumer group). Each batch
is decoded by `sort_records` (poison records become dead letters), each
event is handed to the service inside one SQLite transaction that also
records the event as handled together with what it produced (the ledger in
`store.py`), and then everything the batch produced goes out together with
the batch's offsets in one `send_and_commit` (a Kafka transaction).

Failure model: a crash or a bus error after the SQLite commit but before the
Kafka commit leaves the input uncommitted; it is redelivered (the same
record, at the same offset), found in the ledger, and the recorded outputs
are sent again with their original event ids. Another record with an event
id already handled (a producer's retry) produces nothing: the outputs went,
or will go, with the transaction of the first copy, and sending them again
would show a read_committed reader an event twice.

A handler that raises is a bug or bad data, not a reason to stop the
service: the event is rolled back, logged, counted and set aside on the
dead-letter topic, and the loop goes on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from backend_stubs.store import Store
from orderpush_core.bus.base import (
    Consumer,
    EventBus,
    FencedError,
    OutgoingRecord,
    Record,
    next_offsets,
)
from orderpush_core.bus.poison import dead_letter, sort_records
from orderpush_core.consume import ConsumeLoop, ReadAgain
from orderpush_core.events import TOPIC_OF_TYPE, Event, encode_event, utc_now_rfc3339
from orderpush_core.failures import POISON_ATTEMPTS, is_outage
from orderpush_core.tracing import HEADER, child_traceparent, traceparent_of

log = logging.getLogger("orderpush.stubs")

#: Which consumer group set a dead letter aside: every group reading a topic
#: sees the same poison record, so the dead-letter topic may hold one copy
#: per group.
CONSUMER_HEADER: Final = "x-orderpush-consumer"


class Service(Protocol):
    """A saga participant: pure state machine over its own store."""

    @property
    def name(self) -> str: ...

    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def store(self) -> Store: ...

    def handle(self, event: Event) -> list[Event]:
        """Apply `event` to the store and return the events it causes.

        Called inside a `store.transaction()`; must not commit on its own.
        """
        ...


def derived_event_id(cause_id: str, type_: str) -> str:
    """A deterministic id for the `type_` event caused by event `cause_id`.

    The ledger already makes redelivery re-send the same ids; deriving them
    as well means that even a lost ledger (an in-memory store after a
    restart) produces the ids downstream has already seen.
    """
    return hashlib.sha256(f"{cause_id}\x00{type_}".encode()).hexdigest()[:26]


def follow_up(
    cause: Event,
    type_: str,
    *,
    status: str | None = None,
    version: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    """The `type_` event that `cause` leads to, for the same order and user."""
    return Event(
        event_id=derived_event_id(cause.event_id, type_),
        type=type_,
        order_id=cause.order_id,
        user_id=cause.user_id,
        occurred_at=utc_now_rfc3339(),
        status=status,
        version=version,
        data=data or {},
    )


def outgoing(event: Event, *, traceparent: str) -> OutgoingRecord:
    """The record for `event`: keyed by order, on its type's topic."""
    return OutgoingRecord(
        TOPIC_OF_TYPE[event.type],
        event.order_id,
        encode_event(event),
        ((HEADER, traceparent.encode()),),
    )


@dataclass(slots=True)
class RunnerStats:
    batches: int = 0
    events: int = 0
    replayed: int = 0
    duplicates: int = 0
    handler_errors: int = 0
    dead_letters: int = 0
    bus_errors: int = 0
    #: Inputs whose outputs the bus kept refusing (not an outage): set aside.
    refused: int = 0


def set_aside(letter: OutgoingRecord, group: str) -> OutgoingRecord:
    """A dead letter tagged with the consumer group that refused it."""
    return OutgoingRecord(
        letter.topic, letter.key, letter.value, (*letter.headers, (CONSUMER_HEADER, group.encode()))
    )


class ServiceRunner:
    """Runs one service: its transactional consume loop and its ledger."""

    def __init__(
        self,
        bus: EventBus,
        service: Service,
        *,
        group: str | None = None,
        poll_timeout_ms: int = 500,
        retry_backoff_s: float = 1.0,
        member_id: str | None = None,
    ) -> None:
        self.service = service
        self.group = group or service.name
        self.stats = RunnerStats()
        self.loop = ConsumeLoop(
            bus,
            service.topics,
            self.group,
            self._on_batch,
            transactional=True,
            poll_timeout_ms=poll_timeout_ms,
            retry_backoff_s=retry_backoff_s,
            # Stable across restarts: the member's transactional id is built from it.
            client_id=member_id,
        )

    async def start(self) -> None:
        await self.loop.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self.loop.stop(timeout_s, leave_timeout_s=timeout_s)

    async def _on_batch(self, consumer: Consumer, records: list[Record]) -> None:
        produced = self.process(records)
        try:
            await consumer.send_and_commit(produced, next_offsets(records))
        except Exception as exc:
            # Counted here. An outage: the loop rejoins, and the redelivered
            # inputs are answered from the ledger with the same outputs.
            self.stats.bus_errors += 1
            if isinstance(exc, FencedError) or is_outage(exc):
                raise
            # The bus refuses what the batch produced (a record too large):
            # retried for ever, that would stall the partitions behind it.
            log.warning("%s: the bus refused a batch's outputs (%s); one by one", self.group, exc)
            await self._one_by_one(consumer, records)
            raise ReadAgain("handled a refused batch one input at a time") from None
        self.stats.batches += 1

    async def _one_by_one(self, consumer: Consumer, records: list[Record]) -> None:
        """Each input in its own transaction; one whose outputs are refused
        POISON_ATTEMPTS times is set aside instead (its dead letter and its
        offset committed together)."""
        for record in records:
            failure: Exception | None = None
            for _ in range(POISON_ATTEMPTS):
                try:
                    await consumer.send_and_commit(self.process([record]), next_offsets([record]))
                    failure = None
                    break
                except Exception as exc:
                    if isinstance(exc, FencedError) or is_outage(exc):
                        raise
                    failure = exc
            if failure is None:
                continue
            reason = f"outputs refused: {type(failure).__name__}: {failure}"[:500]
            log.error(
                "%s: %s[%d]@%d set aside: %s",
                self.group,
                record.topic,
                record.partition,
                record.offset,
                reason,
            )
            letter = set_aside(dead_letter(record, reason), self.group)
            await consumer.send_and_commit([letter], next_offsets([record]))
            self.stats.refused += 1
            self.stats.dead_letters += 1

    def process(self, records: Sequence[Record]) -> list[OutgoingRecord]:
        """Everything a batch produces: outputs of its events, and dead letters."""
        batch = sort_records(records)
        self.stats.dead_letters += len(batch.dead_letters)
        produced = [set_aside(letter, self.group) for letter in batch.dead_letters]
        for record, event in batch.events:
            produced.extend(self.handle(record, event))
        return produced

    def handle(self, record: Record, event: Event) -> list[OutgoingRecord]:
        """One event, exactly once: a recorded answer or a new, recorded one.
        A handler that raises is tried POISON_ATTEMPTS times (each in a
        transaction of its own, rolled back) before the event is set aside."""
        self.stats.events += 1
        failure: Exception | None = None
        for _ in range(POISON_ATTEMPTS):
            try:
                return self._handle_once(record, event)
            except Exception as exc:
                self.stats.handler_errors += 1
                failure = exc
        self.stats.dead_letters += 1
        log.error(
            "%s: handling %s (%s) failed %d times; set aside",
            self.group,
            event.event_id,
            event.type,
            POISON_ATTEMPTS,
            exc_info=failure,
        )
        return [set_aside(dead_letter(record, f"handler error: {failure!r}"), self.group)]

    def _handle_once(self, record: Record, event: Event) -> list[OutgoingRecord]:
        store = self.service.store
        with store.transaction():
            recorded = store.recorded_outputs(event.event_id)
            source = f"{record.topic}/{record.partition}/{record.offset}"
            if recorded is not None:
                first = store.source_of(event.event_id)
                if first is not None and first != source:
                    self.stats.duplicates += 1
                    log.info("%s: %s is a copy of %s; skipped", self.group, source, first)
                    return []
                self.stats.replayed += 1
                log.info("%s: %s seen before; re-sending", self.group, event.event_id)
                return recorded
            traceparent = traceparent_of(record.headers)
            produced = [
                outgoing(caused, traceparent=child_traceparent(traceparent))
                for caused in self.service.handle(event)
            ]
            store.record_outputs(event.event_id, produced, source)
            return produced
