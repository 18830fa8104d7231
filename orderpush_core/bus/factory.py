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
    static_members: bool = False,
) -> EventBus:
    """Build (not start) the bus named by `url`.

    `memory://` is the embedded default; `kafka://HOST:PORT[,HOST:PORT]` needs
    the `kafka` extra (aiokafka), imported only here. The group timeouts
    and `static_members` (consumers named by a client_id join as static
    members under it) apply to Kafka consumers only.
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
            static_members=static_members,
        )
    raise ValueError(f"bus URL {url!r}: scheme must be memory:// or kafka://")
