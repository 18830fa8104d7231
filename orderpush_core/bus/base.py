"""The event bus interface, shared by the in-memory bus and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class BusError(RuntimeError):
    """The bus could not do what was asked (broker unreachable, bad URL...)."""


class FencedError(BusError):
    """Another process started with this consumer's transactional id: this
    one is a zombie (paused, cut off, replaced) and must stop, not retry."""


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """A record as a consumer sees it. `topic` is the logical name (no prefix)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()
    #: Set (why, which offsets) when the bus could not decode the record batch
    #: at all; the record then stands for the whole batch, `value` is empty and
    #: `offset` is the batch's last. Consumers set it aside (`sort_records`).
    undecodable: str = ""

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to produce. The key (the order id) picks the partition."""

    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())


class Consumer(Protocol):
    """One member of a consumer group, already started and subscribed."""

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        """Records from the assigned partitions, in offset order per partition.

        Returns an empty list when nothing arrived within `timeout_ms`.
        """
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read."""
        ...

    async def send_and_commit(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Produce `records` and commit `offsets` atomically (a Kafka transaction).

        Only for consumers opened with `transactional=True`. Either both
        happen or neither does, so a consume-transform-produce step runs
        exactly once.
        """
        ...

    def assignment(self) -> frozenset[TopicPartition]: ...

    async def lag(self) -> int:
        """Records not yet consumed on the assigned partitions (end - position)."""
        ...

    async def stop(self) -> None: ...


class EventBus(Protocol):
    """Producer side and consumer factory. Topic names are logical; a
    configured prefix is added and removed by the implementation."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Produce records and wait until the bus acknowledged all of them."""
        ...

    async def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        transactional: bool = False,
        client_id: str | None = None,
    ) -> Consumer:
        """Join `group` on `topics`; a new group starts from the earliest offset."""
        ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next produced record will get."""
        ...

    def scan(self, topic: str) -> AsyncIterator[list[Record]]:
        """Every record of `topic` from its beginning up to its end when
        called, in batches, without a consumer group (rebuilding a cache
        from a compacted topic)."""
        ...


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after handling `records`: last offset + 1 per partition."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = record.tp
        if record.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = record.offset + 1
    return offsets
