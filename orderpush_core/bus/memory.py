"""The embedded default bus: Kafka's semantics that matter, in one process.

Topics have keyed partitions (all records of one order stay in order), and
consumer groups split partitions among members and keep committed offsets,
so a member that stops without committing hands its records to the next one
(redelivery, never loss), just as with Kafka.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence

from orderpush_core.bus.base import BusError, OutgoingRecord, Record, TopicPartition


class _Group:
    def __init__(self) -> None:
        self.members: list[MemoryConsumer] = []
        self.committed: dict[TopicPartition, int] = {}


class MemoryEventBus:
    def __init__(self, *, topic_prefix: str = "", partitions: int = 4) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._arrived = asyncio.Event()
        self._member_ids = itertools.count(1)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for group in self._groups.values():
            for member in list(group.members):
                await member.stop()

    # -- producing -------------------------------------------------------

    def _log(self, topic: str) -> list[list[Record]]:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = [[] for _ in range(self.partitions)]
            # A new topic changes what the groups subscribed to it are assigned.
            for group in self._groups.values():
                if any(topic in member.topics for member in group.members):
                    self._rebalance(group)
        return log

    def partition_for(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    def _append(self, records: Sequence[OutgoingRecord]) -> None:
        now_ms = int(time.time() * 1000)
        for out in records:
            partition = self.partition_for(out.key)
            log = self._log(out.topic)[partition]
            log.append(
                Record(
                    topic=out.topic,
                    partition=partition,
                    offset=len(log),
                    key=out.key,
                    value=out.value,
                    timestamp_ms=now_ms,
                    headers=out.headers,
                )
            )
        # Wake every waiting consumer; each re-checks its own partitions.
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self._append(records)

    async def scan(self, topic: str) -> AsyncIterator[list[Record]]:
        """Every record of `topic` so far, in one batch."""
        records = [record for log in self._log(topic) for record in log]
        if records:
            yield records

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {p: len(log) for p, log in enumerate(self._log(topic))}

    # -- consuming -------------------------------------------------------

    async def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        transactional: bool = False,
        client_id: str | None = None,
    ) -> MemoryConsumer:
        for topic in topics:
            self._log(topic)
        grp = self._groups.setdefault(group, _Group())
        member = MemoryConsumer(
            self, grp, tuple(topics), transactional, client_id or f"member-{next(self._member_ids)}"
        )
        grp.members.append(member)
        self._rebalance(grp)
        return member

    def _rebalance(self, group: _Group) -> None:
        """Round-robin the group's partitions over its members (Kafka's
        RoundRobinAssignor, simplified); positions restart from the commits."""
        members = sorted(group.members, key=lambda m: m.client_id)
        tps = sorted(
            {
                TopicPartition(topic, p)
                for member in members
                for topic in member.topics
                for p in range(len(self._logs.get(topic, [])))
            }
        )
        shares: dict[int, set[TopicPartition]] = {i: set() for i in range(len(members))}
        for i, tp in enumerate(tps):
            candidates = [j for j, m in enumerate(members) if tp.topic in m.topics]
            shares[candidates[i % len(candidates)]].add(tp)
        for j, member in enumerate(members):
            member._assign(frozenset(shares[j]))
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _leave(self, group: _Group, member: MemoryConsumer) -> None:
        if member in group.members:
            group.members.remove(member)
            self._rebalance(group)


class MemoryConsumer:
    def __init__(
        self,
        bus: MemoryEventBus,
        group: _Group,
        topics: tuple[str, ...],
        transactional: bool,
        client_id: str,
    ) -> None:
        self._bus = bus
        self._group = group
        self.topics = topics
        self.client_id = client_id
        self._transactional = transactional
        self._positions: dict[TopicPartition, int] = {}
        self._stopped = False

    def _assign(self, tps: frozenset[TopicPartition]) -> None:
        # A partition the member keeps keeps its position (as with Kafka's
        # cooperative rebalancing); a newly assigned one starts at the commit.
        self._positions = {
            tp: self._positions.get(tp, self._group.committed.get(tp, 0)) for tp in tps
        }

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp in sorted(self._positions):
            log = self._bus._logs[tp.topic][tp.partition]
            position = self._positions[tp]
            if position < len(log):
                chunk = log[position : position + max_records - len(out)]
                out.extend(chunk)
                self._positions[tp] = position + len(chunk)
            if len(out) >= max_records:
                break
        return out

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        if self._stopped:
            raise BusError("consumer is stopped")
        deadline = asyncio.get_running_loop().time() + timeout_ms / 1000
        while True:
            records = self._take(max_records)
            if records:
                return records
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._stopped:
                return []
            try:
                await asyncio.wait_for(self._bus._arrived.wait(), remaining)
            except TimeoutError:
                return []

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp not in self._positions:
                raise BusError(f"cannot commit {tp}: not assigned to this member")
            self._group.committed[tp] = offset

    async def send_and_commit(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> None:
        if not self._transactional:
            raise BusError("send_and_commit needs a consumer opened with transactional=True")
        # One process and no await in between: the append and the commit are
        # atomic, which is what the Kafka transaction guarantees.
        for tp in offsets:
            if tp not in self._positions:
                raise BusError(f"cannot commit {tp}: not assigned to this member")
        self._bus._append(records)
        self._group.committed.update(offsets)

    async def lag(self) -> int:
        return sum(
            len(self._bus._logs[tp.topic][tp.partition]) - pos
            for tp, pos in self._positions.items()
        )

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._bus._leave(self._group, self)
