"""The event bus: topics, keyed partitions, consumer groups and offsets.

`open_bus(url)` picks the implementation by URL scheme, importing the Kafka
client only when a `kafka://` URL asks for it (it is an optional extra).
"""

from __future__ import annotations

from orderpush_core.bus.base import (
    BusError,
    Consumer,
    EventBus,
    FencedError,
    OutgoingRecord,
    Record,
    TopicPartition,
)
from orderpush_core.bus.factory import open_bus

__all__ = [
    "BusError",
    "Consumer",
    "EventBus",
    "FencedError",
    "OutgoingRecord",
    "Record",
    "TopicPartition",
    "open_bus",
]
