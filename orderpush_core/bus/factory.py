"""Pick the event bus implementation from a URL: memory:// or kafka://."""

from __future__ import annotations

from urllib.parse import urlsplit

from orderpush_core.bus.base import EventBus


def open_bus(
    url: str,
    *,
    topic_prefix: str = "",
    partitions: int = 4,
    session_timeout_ms: int = 3_000,
    heartbeat_interval_ms: int = 500,
) -> EventBus:
    """Build (not start) the bus named by `url`.

    `memory://` is the embedded default; `kafka://HOST:PORT[,HOST:PORT]` needs
    the `kafka` extra (aiokafka), imported only here. The group timeouts
    apply to Kafka consumers only.
    """
    parts = urlsplit(url)
    if parts.scheme == "memory":
        from orderpush_core.bus.memory import MemoryEventBus

        return MemoryEventBus(topic_prefix=topic_prefix, partitions=partitions)
    if parts.scheme == "kafka":
        if not parts.netloc:
            raise ValueError(f"bus URL {url!r} names no broker (kafka://HOST:PORT)")
        from orderpush_core.bus.kafka import KafkaEventBus

        return KafkaEventBus(
            bootstrap_servers=parts.netloc,
            topic_prefix=topic_prefix,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )
    raise ValueError(f"bus URL {url!r}: scheme must be memory:// or kafka://")
