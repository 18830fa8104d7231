"""The production bus: Apache Kafka through aiokafka.

Topic names on the wire are `topic_prefix + logical`; everything this module
hands back carries the logical name. Consumers never auto-commit: the caller
commits only what it has handed on, so a crash means redelivery, never loss.
Every aiokafka failure leaves this module as a `BusError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as _KafkaTP
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalOperation,
    KafkaError,
    ProducerFenced,
)

from orderpush_core.bus import kafka_batches
from orderpush_core.bus.base import BusError, FencedError, OutgoingRecord, Record, TopicPartition
from orderpush_core.bus.kafka_membership import instance_id_for, leave_on_close
from orderpush_core.events import COMPACTED_TOPICS

log = logging.getLogger(__name__)

# aiokafka raises a few errors outside its KafkaError tree.
_KAFKA_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    ConsumerStoppedError,
    IllegalOperation,
)
_TOPIC_ALREADY_EXISTS = 36
_TOPIC_READY_TIMEOUT_S = 15.0
_LAG_TIMEOUT_S = 15.0
_MIN_SESSION_TIMEOUT = "group.min.session.timeout.ms"


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Re-raise aiokafka's errors as BusError so callers handle one type."""
    try:
        yield
    except _KAFKA_ERRORS as exc:
        raise BusError(f"kafka: {what} failed: {exc!r}") from exc


class KafkaEventBus:
    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str = "",
        *,
        partitions: int = 4,
        replication_factor: int = 1,
        linger_ms: int = 5,
        fetch_max_wait_ms: int = 100,
        session_timeout_ms: int = 3_000,
        heartbeat_interval_ms: int = 500,
        static_members: bool = False,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_prefix = topic_prefix
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.linger_ms = linger_ms
        # Bounds how long a fetch for idle partitions can hold back records of
        # partitions that just became fetchable (one fetch in flight per node).
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # How long the group coordinator waits for a silent member before its
        # partitions move: the failover time after a crash. Raised at start to
        # the broker's group.min.session.timeout.ms if that is higher (a
        # broker refuses a shorter one, and the member could never join).
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        # Consumers opened with a client_id join as static members under it
        # (kafka_membership.py): a process restarted with the same id takes
        # its predecessor's partitions at once instead of after its session.
        # Transactional members never do (see KafkaConsumer).
        self.static_members = static_members
        self._producer: Any = None
        self._admin: Any = None
        self._offsets_reader: Any = None  # ungrouped consumer: end offsets only
        self._known_topics: set[str] = set()
        self._consumers: set[KafkaConsumer] = set()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    # -- naming ------------------------------------------------------------

    def wire_name(self, topic: str) -> str:
        return self.topic_prefix + topic

    def logical_name(self, wire: str) -> str:
        return wire[len(self.topic_prefix) :] if wire.startswith(self.topic_prefix) else wire

    def _ktp(self, tp: TopicPartition) -> Any:
        return _KafkaTP(self.wire_name(tp.topic), tp.partition)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._closed:
                # Quietly reconnecting a stopped bus would hide a shutdown bug.
                raise BusError("kafka bus is stopped")
            if self._started:
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                enable_idempotence=True,
                acks="all",
                linger_ms=self.linger_ms,
            )
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
            )
            try:
                with _translated(f"connecting to {self.bootstrap_servers}"):
                    await producer.start()
                    await admin.start()
                    await reader.start()
            except BaseException:
                await _quietly(producer.stop(), admin.close(), reader.stop())
                raise
            self._producer, self._admin, self._offsets_reader = producer, admin, reader
            self._started = True
            await self._fit_session_timeout()

    async def _fit_session_timeout(self) -> None:
        """Raise the session timeout to the broker's minimum if it is higher.
        Reading broker configs may be forbidden (no DescribeConfigs ACL): then
        the configured value is used as it is."""
        try:
            brokers = sorted(b.nodeId for b in self._admin._client.cluster.brokers())
            resource = ConfigResource(
                ConfigResourceType.BROKER, str(brokers[0]), {_MIN_SESSION_TIMEOUT: None}
            )
            (response,) = await self._admin.describe_configs([resource])
            entries = response.to_object()["resources"][0]["config_entries"]
            minimum = int(
                next(
                    e["config_value"] for e in entries if e["config_names"] == _MIN_SESSION_TIMEOUT
                )
            )
        except Exception as exc:
            log.info(
                "kafka: cannot read %s (%r); using %d ms",
                _MIN_SESSION_TIMEOUT,
                exc,
                self.session_timeout_ms,
            )
            return
        if minimum > self.session_timeout_ms:
            log.warning(
                "kafka: the broker's %s is %d ms, above the configured session timeout of "
                "%d ms (ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS): using %d ms, so a crashed "
                "member's partitions move only after that long",
                _MIN_SESSION_TIMEOUT,
                minimum,
                self.session_timeout_ms,
                minimum,
            )
            self.session_timeout_ms = minimum

    async def stop(self) -> None:
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.stop()
        if self._started:
            self._started = False
            await _quietly(self._producer.stop(), self._admin.close(), self._offsets_reader.stop())

    # -- topics ------------------------------------------------------------

    async def _describe(self, wire_names: Sequence[str]) -> dict[str, list[int]]:
        """Partitions that have a leader, per topic (missing topics: empty)."""
        with _translated("describing topics"):
            topics: list[dict[str, Any]] = await self._admin.describe_topics(list(wire_names))
        return {
            t["topic"]: sorted(p["partition"] for p in t["partitions"] if p["leader"] >= 0)
            for t in topics
        }

    async def _ensure_topics(self, topics: Iterable[str]) -> None:
        """Create missing topics and wait until they have leaders, so a new
        subscription is assigned partitions at once instead of after the next
        metadata refresh. Retries for a while: a broker that is just starting
        refuses requests or cannot place replicas yet."""
        await self.start()
        missing = sorted({self.wire_name(t) for t in topics} - self._known_topics)
        deadline = asyncio.get_running_loop().time() + _TOPIC_READY_TIMEOUT_S
        problem = ""
        while missing:
            try:
                problem = await self._create_and_describe(missing)
            except BusError as exc:
                problem = str(exc)
            missing = [name for name in missing if name not in self._known_topics]
            if not missing:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise BusError(f"kafka: topics {missing} not available: {problem}")
            await asyncio.sleep(0.2)

    async def _create_and_describe(self, wire_names: list[str]) -> str:
        """One attempt: returns the last creation problem ("" if none)."""
        new = [
            NewTopic(
                name,
                self.partitions,
                self.replication_factor,
                topic_configs=(
                    {"cleanup.policy": "compact"}
                    if self.logical_name(name) in COMPACTED_TOPICS
                    else {}
                ),
            )
            for name in wire_names
        ]
        with _translated(f"creating topics {wire_names}"):
            response = await self._admin.create_topics(new)
        problem = ""
        for result in response.to_object()["topic_errors"]:
            if result["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                # No Create ACL, or a broker not ready to place replicas: the
                # topic may still exist or be auto-created; describe tells.
                problem = f"cannot create {result['topic']}: {result['error_message']}"
                log.debug("kafka: %s", problem)
        described = await self._describe(wire_names)
        self._known_topics |= {name for name, parts in described.items() if parts}
        return problem

    async def end_offsets(self, topic: str) -> dict[int, int]:
        await self._ensure_topics([topic])
        wire = self.wire_name(topic)
        partitions = (await self._describe([wire])).get(wire, [])
        with _translated(f"reading end offsets of {wire}"):
            ends: dict[Any, int] = await self._offsets_reader.end_offsets(
                [_KafkaTP(wire, p) for p in partitions]
            )
        return {ktp.partition: offset for ktp, offset in ends.items()}

    async def scan(self, topic: str) -> AsyncIterator[list[Record]]:
        """Every record of `topic` from its beginning up to its end at the
        call (the last stable offset: committed records only), in batches.
        No consumer group: nothing is joined or committed."""
        await self._ensure_topics([topic])
        wire = self.wire_name(topic)
        partitions = (await self._describe([wire])).get(wire, [])
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        with _translated(f"scanning {wire}"):
            await reader.start()
        try:
            tps = [_KafkaTP(wire, p) for p in partitions]
            with _translated(f"scanning {wire}"):
                reader.assign(tps)
                ends: dict[Any, int] = await reader.end_offsets(tps)
                await reader.seek_to_beginning(*tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                with _translated(f"scanning {wire}"):
                    batches = await reader.getmany(*remaining, timeout_ms=500, max_records=5000)
                    for tp in list(remaining):
                        if await reader.position(tp) >= ends[tp]:
                            remaining.discard(tp)
                out = [_record(topic, m) for msgs in batches.values() for m in msgs]
                if out:
                    yield out
        finally:
            await _quietly(reader.stop())

    # -- producing ---------------------------------------------------------

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if not records:
            return
        await self._ensure_topics({r.topic for r in records})
        await _send_all(self._producer, self, records, "publishing")

    # -- consuming ---------------------------------------------------------

    async def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        transactional: bool = False,
        client_id: str | None = None,
    ) -> KafkaConsumer:
        await self._ensure_topics(topics)
        consumer = KafkaConsumer(self, tuple(topics), group, transactional, client_id)
        await consumer._start()
        self._consumers.add(consumer)
        return consumer


async def _send_all(
    producer: Any, bus: KafkaEventBus, records: Sequence[OutgoingRecord], what: str
) -> None:
    """Hand every record to the producer first (so they batch), then wait for
    all acks. Each ack is awaited even after a failure, so none is left
    dangling; a caller that retries may duplicate the ones that did land,
    which readers tolerate (event ids, versions)."""
    acks: list[Any] = []
    failure: BaseException | None = None
    counts: dict[str, int] = {}
    try:
        for r in records:
            key = r.key.encode()
            topic = bus.wire_name(r.topic)
            partition = None
            if r.topic in COMPACTED_TOPICS:
                if topic not in counts:
                    counts[topic] = len(await producer.partitions_for(topic))
                partition = compacted_partition(key, counts[topic])
            acks.append(
                await producer.send(
                    topic, r.value, key, partition=partition, headers=list(r.headers)
                )
            )
    except _KAFKA_ERRORS as exc:  # e.g. a record over the size limit
        failure = exc
    results = await asyncio.gather(*acks, return_exceptions=True)
    failure = failure or next((r for r in results if isinstance(r, BaseException)), None)
    if failure is not None:
        raise BusError(f"kafka: {what} failed: {failure!r}") from failure


def compacted_partition(key: bytes, partitions: int) -> int:
    """The partition of a compacted topic's key. Only this project writes
    those topics (the gateway's order states), so it need not be Kafka's
    murmur2, whose pure-Python version was 6% of the gateway's CPU at 6,000
    events/s (records go through `send` with this partition, so the
    producer still merges them into its open batch per partition). Stable
    for a key, so compaction keeps one record per order (a
    writer that partitioned differently, e.g. an older version, leaves one
    more record per order behind; a rebuild keeps the highest version)."""
    return zlib.crc32(key) % partitions


async def _quietly(*closers: Any) -> None:
    """Run shutdown coroutines, logging instead of raising: stop must not fail."""
    for closer in closers:
        try:
            await closer
        except asyncio.CancelledError:
            # AIOKafkaConsumer.stop() cancels its pending fetch tasks and awaits
            # them without catching their CancelledError (aiokafka 0.14: e.g. a
            # fetch waiting to retry a broker that is down). That one is not a
            # cancellation of this task: swallow it, unless this task was
            # cancelled too.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("kafka: closing a client was cut short by aiokafka (cancelled)")
        except Exception:
            log.warning("kafka: error while closing a client", exc_info=True)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: KafkaConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._owner.revocations += 1
        log.info("kafka: %s revoked %s", self._owner.name, sorted(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.rebalances += 1
        # Positions restart from the group's commits: forget local rewind marks.
        self._owner._rewind_to.clear()
        # ... which may lag behind a transaction of ours that committed just
        # before the rebalance (its offsets land with its markers, a moment
        # later, and aiokafka cannot ask for stable offsets): check them.
        self._owner._check_positions |= set(assigned) & set(self._owner._committed_by_me)
        log.info("kafka: %s assigned %s", self._owner.name, sorted(assigned))


class KafkaConsumer:
    """One group member. `rebalances` counts completed assignments and
    `revocations` the rebalances that took partitions away (for metrics)."""

    def __init__(
        self,
        bus: KafkaEventBus,
        topics: tuple[str, ...],
        group: str,
        transactional: bool,
        client_id: str | None,
    ) -> None:
        self._bus = bus
        self.topics = topics
        self.group = group
        # Static membership for a named, non-transactional member only. A
        # transactional member's zombie (a frozen process thawed after its
        # successor started) must not take its place back in the group: its
        # producer is fenced, but as a static member it would first evict the
        # successor, over and over (each rejoin evicts the other).
        self.group_instance_id = (
            instance_id_for(client_id, (bus.wire_name(t) for t in topics))
            if bus.static_members and client_id and not transactional
            else None
        )
        self.client_id = client_id or f"orderpush-{uuid.uuid4().hex[:8]}"
        self.name = f"{group}/{self.client_id}"
        self.rebalances = 0
        self.revocations = 0
        self._transactional = transactional
        # A batch that cannot be decoded must not stall its partition.
        kafka_batches.install()
        self._transactional_id = f"{bus.topic_prefix}{group}-{self.client_id}"
        self._txn_producer: Any = None
        self._fenced = False
        self._stopped = False
        # Per partition, where to seek back to if a transaction fails: the last
        # committed offset, else the first offset returned since assignment.
        self._rewind_to: dict[Any, int] = {}
        # Per partition, the offset our last committed transaction committed,
        # and the partitions whose position must not start before it.
        self._committed_by_me: dict[Any, int] = {}
        self._check_positions: set[Any] = set()
        self._consumer: Any = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap_servers,
            group_id=group,
            client_id=self.client_id,
            group_instance_id=self.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # A crashed member's partitions move after the session timeout;
            # heartbeats at most a third of it, so one lost heartbeat is not
            # taken for a crash.
            session_timeout_ms=bus.session_timeout_ms,
            heartbeat_interval_ms=min(bus.heartbeat_interval_ms, bus.session_timeout_ms // 3),
            fetch_max_wait_ms=bus.fetch_max_wait_ms,
        )

    async def _start(self) -> None:
        try:
            if self._transactional:
                # Before joining the group: starting the producer finishes
                # (commits or aborts) the last transaction under this id, so
                # the offsets the new member reads next are final. Joining
                # first could read the offsets from before a commit still in
                # progress and handle its inputs twice. Also fails now rather
                # than on the first send if transactions are off.
                await self._producer()
            with _translated(f"starting consumer {self.name}"):
                self._consumer.subscribe(
                    [self._bus.wire_name(t) for t in self.topics], listener=_Listener(self)
                )
                await self._consumer.start()
        except BaseException:
            await self.stop()
            raise

    async def _producer(self) -> Any:
        if self._fenced:
            raise FencedError(
                f"kafka: transactional id {self._transactional_id!r} was taken over by "
                "another member (fenced); stop this consumer"
            )
        if self._txn_producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bus.bootstrap_servers,
                transactional_id=self._transactional_id,
                enable_idempotence=True,
                acks="all",
                linger_ms=self._bus.linger_ms,
                # An instance that dies mid-transaction holds back read_committed
                # readers of those partitions until this expires (or until a
                # successor with the same client_id starts and aborts it).
                transaction_timeout_ms=15_000,
            )
            try:
                # InitProducerId: fences an older producer with this id and
                # aborts whatever transaction it left open.
                with _translated(f"starting transactional producer {self._transactional_id}"):
                    await producer.start()
            except BaseException:
                await _quietly(producer.stop())
                raise
            self._txn_producer = producer
        return self._txn_producer

    # -- Consumer protocol -------------------------------------------------

    def assignment(self) -> frozenset[TopicPartition]:
        if self._stopped:
            return frozenset()
        return frozenset(
            TopicPartition(self._bus.logical_name(ktp.topic), ktp.partition)
            for ktp in self._consumer.assignment()
        )

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 500) -> list[Record]:
        if self._stopped:
            raise BusError("consumer is stopped")
        try:
            with _translated(f"polling {self.name}"):
                await self._fix_positions()
                batches: dict[Any, list[Any]] = await self._consumer.getmany(
                    timeout_ms=timeout_ms, max_records=max_records
                )
                if self._check_positions:  # a rebalance while we waited
                    moved = await self._fix_positions()
                    batches = {ktp: b for ktp, b in batches.items() if ktp not in moved}
        except BusError:
            if self._stopped:  # stopped while waiting: same as "nothing arrived"
                return []
            raise
        out: list[Record] = []
        for ktp, batch in batches.items():
            if not batch:
                continue
            batch = sorted(batch, key=lambda m: m.offset)
            self._rewind_to.setdefault(ktp, batch[0].offset)
            topic = self._bus.logical_name(ktp.topic)
            out.extend(_record(topic, m) for m in batch)
        return out

    async def _fix_positions(self) -> set[Any]:
        """After a rebalance, never start a partition before the offset our
        own last transaction committed (the group may still report an older
        one): re-reading from there would send outputs twice. Returns the
        partitions moved forward."""
        moved: set[Any] = set()
        assigned = self._consumer.assignment()
        for ktp in list(self._check_positions):
            self._check_positions.discard(ktp)
            ours = self._committed_by_me.get(ktp)
            if ours is None or ktp not in assigned:
                continue
            group = await self._consumer.committed(ktp)
            if group is None or group < ours:
                log.info(
                    "kafka: %s: %s committed %s, ours was %d: reading on from ours",
                    self.name,
                    ktp,
                    group,
                    ours,
                )
                self._consumer.seek(ktp, ours)
                moved.add(ktp)
        return moved

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        if self._stopped:
            raise BusError("consumer is stopped")
        kafka_offsets = {self._bus._ktp(tp): offset for tp, offset in offsets.items()}
        # CommitFailedError (a rebalance took the partitions) lands here too:
        # the new owner re-reads from the last commit, so nothing is lost.
        with _translated(f"committing {dict(offsets)} for {self.name}"):
            await self._consumer.commit(kafka_offsets)
        self._rewind_to.update(kafka_offsets)

    async def send_and_commit(
        self, records: Sequence[OutgoingRecord], offsets: Mapping[TopicPartition, int]
    ) -> None:
        if not self._transactional:
            raise BusError("send_and_commit needs a consumer opened with transactional=True")
        if self._stopped:
            raise BusError("consumer is stopped")
        if not records and not offsets:
            return
        await self._bus._ensure_topics({r.topic for r in records})
        producer = await self._producer()
        kafka_offsets = {self._bus._ktp(tp): offset for tp, offset in offsets.items()}
        try:
            async with producer.transaction():
                await _send_all(producer, self._bus, records, "transactional send")
                if kafka_offsets:
                    with _translated("adding offsets to the transaction"):
                        await producer.send_offsets_to_transaction(kafka_offsets, self.group)
        except BaseException as exc:
            await self._after_failed_transaction(exc, kafka_offsets)
            if self._fenced:
                raise FencedError(
                    f"kafka: {self.name} was fenced: another process started with "
                    f"transactional id {self._transactional_id!r}"
                ) from exc
            if isinstance(exc, _KAFKA_ERRORS):
                raise BusError(f"kafka: transaction of {self.name} failed: {exc!r}") from exc
            raise
        self._rewind_to.update(kafka_offsets)
        self._committed_by_me.update(kafka_offsets)

    async def _after_failed_transaction(self, exc: BaseException, kafka_offsets: Any) -> None:
        # The transaction was aborted (or is dead with its producer). Start the
        # next one on a fresh producer, unless another member fenced us.
        cause = exc.__cause__ if isinstance(exc, BusError) else exc
        self._fenced = isinstance(cause, ProducerFenced) or isinstance(exc, ProducerFenced)
        producer, self._txn_producer = self._txn_producer, None
        if producer is not None:
            await _quietly(producer.stop())
        # Our position is past the inputs whose outputs were just discarded;
        # a later commit would skip them for good. Seek back to read them again.
        assigned = self._consumer.assignment()
        for ktp in kafka_offsets:
            if ktp in assigned and ktp in self._rewind_to:
                self._consumer.seek(ktp, self._rewind_to[ktp])

    async def lag(self) -> int:
        if self._stopped:
            return 0
        assigned = list(self._consumer.assignment())
        if not assigned:
            return 0
        try:
            # position() waits for a reset that needs the broker: bound it, a
            # metric must not hang its caller.
            async with asyncio.timeout(_LAG_TIMEOUT_S):
                with _translated(f"reading lag of {self.name}"):
                    # read_committed: the end is the last stable offset, i.e.
                    # what this member can actually still read.
                    ends: dict[Any, int] = await self._consumer.end_offsets(assigned)
                    positions = [await self._consumer.position(ktp) for ktp in assigned]
        except TimeoutError as exc:
            raise BusError(f"kafka: reading lag of {self.name} timed out") from exc
        return sum(max(0, ends[ktp] - pos) for ktp, pos in zip(assigned, positions, strict=True))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._bus._consumers.discard(self)
        producer, self._txn_producer = self._txn_producer, None
        # Leaving the group (not committing) hands the partitions over at once;
        # a static member too (aiokafka would not send its LeaveGroup).
        if self.group_instance_id is not None:
            leave_on_close(self._consumer)
        await _quietly(self._consumer.stop())
        # If aiokafka's stop() was cut short (see _quietly), its client is still
        # open, and its metadata task would retry a dead broker for ever.
        # Closing it again after a complete stop() is harmless.
        await _quietly(self._consumer._client.close())
        if producer is not None:
            await _quietly(producer.stop())


def _record(topic: str, message: Any) -> Record:
    if isinstance(message.checksum, kafka_batches.UndecodableBatch):
        problem = message.checksum
        log.error("kafka: %s[%d]: %s; set aside", topic, message.partition, problem.describe())
        return Record(
            topic=topic,
            partition=int(message.partition),
            offset=int(message.offset),
            key=None,
            value=b"",
            timestamp_ms=int(message.timestamp),
            undecodable=problem.describe(),
        )
    key: bytes | None = message.key
    value: bytes | None = message.value
    headers: Sequence[tuple[str, bytes | None]] = message.headers or ()
    return Record(
        topic=topic,
        partition=int(message.partition),
        offset=int(message.offset),
        # Decode leniently: an outside producer's odd key must not stop the
        # consumer; the value check downstream sets bad records aside.
        key=key.decode("utf-8", "replace") if key is not None else None,
        value=value if value is not None else b"",  # a tombstone is a poison record
        timestamp_ms=int(message.timestamp),
        # Most records carry no headers: skip building a generator for them.
        headers=tuple((name, data if data is not None else b"") for name, data in headers)
        if headers
        else (),
    )
