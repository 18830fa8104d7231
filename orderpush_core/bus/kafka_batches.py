"""Kafka record batches that cannot be decoded are set aside, never retried forever.

aiokafka decodes a fetched batch lazily, while handing its records out. A
batch it cannot decode (a codec whose library is missing, a codec id it does
not know, a bad CRC, corrupt compressed bytes) raises out of `getmany()`
without moving the partition's position, so every later poll fetches the same
batch and fails again: the partition stalls for good, lag grows and nothing
behind the batch is delivered (issue 7).

`install()` swaps aiokafka's per-partition record iterator for one that
decodes each batch up front and, when that fails, yields a single stand-in
record at the batch's last offset instead. aiokafka then moves the position
past the batch as for any other record; the stand-in carries an
`UndecodableBatch` (in `ConsumerRecord.checksum`, a slot no producer can
fill), which `KafkaConsumer` turns into a `Record` with `undecodable` set, and
`sort_records` sets that aside to the dead-letter topic like a poison record.

It also counts the batches per codec, so an operator (and the codec tests)
can see which codecs producers actually use.

A batch whose framing is broken (its length header) cannot be stepped over
like this: aiokafka's batch reader raises before a batch exists. A broker
never hands those out unless its log is corrupt.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer import fetcher as _fetcher

log = logging.getLogger(__name__)

#: Batches seen per codec name since the process started (all consumers).
BATCHES_BY_CODEC: Counter[str] = Counter()

# The codec is the low 3 bits of a batch's attributes (Kafka's record format).
_CODEC_MASK = 0x07
_CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@dataclass(frozen=True, slots=True)
class UndecodableBatch:
    """Why a batch could not be decoded, and the offsets it spans."""

    reason: str
    first_offset: int
    last_offset: int
    codec: str

    def describe(self) -> str:
        return (
            f"undecodable {self.codec} batch, offsets {self.first_offset}-{self.last_offset}: "
            f"{self.reason}"
        )


def codec_name(batch: Any) -> str:
    attributes = getattr(batch, "attributes", None)
    if not isinstance(attributes, int):
        return "unknown"
    code = attributes & _CODEC_MASK
    return _CODEC_NAMES.get(code, f"codec-{code}")


class _StandIn:
    """One record in place of a whole undecodable batch, at its last offset,
    so aiokafka's position moves past the batch."""

    __slots__ = ("checksum", "offset", "timestamp")
    timestamp_type = 0
    key = None
    value = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def __init__(self, batch: Any, reason: str) -> None:
        first = int(getattr(batch, "base_offset", 0))
        last = int(batch.next_offset) - 1
        self.offset = last
        self.timestamp = int(getattr(batch, "max_timestamp", -1))
        self.checksum = UndecodableBatch(reason, first, last, codec_name(batch))


class _CheckedBatch:
    """A batch decoded in one go on first use (aiokafka's C batch decompresses
    the whole batch at its first record anyway), so failure is caught here."""

    def __init__(self, batch: Any, check_crcs: bool) -> None:
        self._batch = batch
        self._check_crcs = check_crcs
        self._records: list[Any] | None = None
        self._iterator: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        # base_offset, next_offset, producer_id, is_control_batch, ...
        return getattr(self._batch, name)

    def _decoded(self) -> list[Any]:
        if self._records is None:
            self._records = self._decode()
        return self._records

    def _decode(self) -> list[Any]:
        batch = self._batch
        if self._check_crcs and not batch.validate_crc():
            return [_StandIn(batch, "invalid CRC")]
        try:
            return list(batch)
        except Exception as exc:  # UnsupportedCodecError, CorruptRecordException, cramjam's
            return [_StandIn(batch, f"{type(exc).__name__}: {exc}")]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._decoded())

    def __next__(self) -> Any:
        # aiokafka reads a control batch's marker with next(batch).
        if self._iterator is None:
            self._iterator = iter(self._decoded())
        return next(self._iterator)


class _CheckedRecords:
    """aiokafka's MemoryRecords, handing out checked batches."""

    def __init__(self, records: Any, check_crcs: bool) -> None:
        self._records = records
        self._check_crcs = check_crcs

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> _CheckedBatch | None:
        batch = self._records.next_batch()
        if batch is None:
            return None
        BATCHES_BY_CODEC[codec_name(batch)] += 1
        return _CheckedBatch(batch, self._check_crcs)

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


_ORIGINAL: Any = _fetcher.PartitionRecords
_EXPECTED_PARAMETERS = [
    "self",
    "tp",
    "records",
    "aborted_transactions",
    "fetch_offset",
    "key_deserializer",
    "value_deserializer",
    "check_crcs",
    "isolation_level",
]


class _CheckedPartitionRecords(_ORIGINAL):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(
        self,
        tp: Any,
        records: Any,
        aborted_transactions: Any,
        fetch_offset: int,
        key_deserializer: Any,
        value_deserializer: Any,
        check_crcs: bool,
        isolation_level: Any,
    ) -> None:
        # The CRC is checked by the batch itself, so a bad one is set aside too
        # (aiokafka would raise before the batch's first record, for ever).
        super().__init__(
            tp,
            _CheckedRecords(records, check_crcs),
            aborted_transactions,
            fetch_offset,
            key_deserializer,
            value_deserializer,
            False,
            isolation_level,
        )


_install_lock = threading.Lock()


def install() -> bool:
    """Put the checked iterator in place for every aiokafka consumer of this
    process (idempotent). Returns False, and logs, if this aiokafka's fetcher
    does not look like the one this was written against (0.11-0.14)."""
    with _install_lock:
        if _fetcher.PartitionRecords is _CheckedPartitionRecords:
            return True
        found = list(inspect.signature(_ORIGINAL.__init__).parameters)
        if found != _EXPECTED_PARAMETERS or not hasattr(_ORIGINAL, "_unpack_records"):
            log.error(
                "kafka: this aiokafka's PartitionRecords%s is not the one expected; an "
                "undecodable batch will stall its partition instead of being set aside",
                found,
            )
            return False
        _fetcher.PartitionRecords = _CheckedPartitionRecords
        return True
