"""Poison records: decoded once, set aside to the dead-letter topic, counted.

Every consumer (gateway and stub services alike) runs its batches through
`sort_records`, so a malformed record never stops a consumer and is never
pushed to anyone (docs/protocol.md section 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from orderpush_core.bus.base import OutgoingRecord, Record
from orderpush_core.events import DEAD_LETTER_TOPIC, Event, PoisonEvent, decode_event

log = logging.getLogger("orderpush.poison")


@dataclass(slots=True)
class SortedBatch:
    events: list[tuple[Record, Event]] = field(default_factory=list)
    dead_letters: list[OutgoingRecord] = field(default_factory=list)
    #: How many of `dead_letters` stand for a whole batch the bus could not
    #: decode (the others are single poison records).
    undecodable_batches: int = 0


def sort_records(records: Sequence[Record]) -> SortedBatch:
    """Decode a batch; valid events in order, poison ones as dead letters."""
    batch = SortedBatch()
    for record in records:
        if record.undecodable:
            # The bus already logged it; the dead letter names the offsets, so
            # the batch can be re-read with a tool that decodes it (kcat).
            batch.undecodable_batches += 1
            batch.dead_letters.append(dead_letter(record, record.undecodable))
            continue
        try:
            batch.events.append((record, decode_event(record.value)))
        except PoisonEvent as exc:
            log.warning(
                "poison record %s[%d]@%d set aside: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            batch.dead_letters.append(dead_letter(record, str(exc)))
    return batch


def dead_letter(record: Record, reason: str) -> OutgoingRecord:
    """The record as it came, with where it came from and why it was refused."""
    headers = (
        *record.headers,
        ("x-orderpush-reason", reason.encode()),
        ("x-orderpush-source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    )
    return OutgoingRecord(DEAD_LETTER_TOPIC, record.key or "", record.value, headers)
