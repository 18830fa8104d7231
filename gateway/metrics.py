"""Counters for Prometheus (`/metrics`) and the operator page (`/api/stats`).

Each app gets its own CollectorRegistry so several gateway instances can live
in one process (tests, the demo) without clashing over global metric names.
"""

from __future__ import annotations

import time
from collections import deque
from statistics import quantiles

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.hot_metrics import FastCounter, FastHistogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def current(metric: Counter | Gauge | FastCounter) -> float:
    """The value of an unlabelled counter or gauge, read through the public
    `collect()` (not prometheus_client's private `_value`)."""
    for family in metric.collect():
        for sample in family.samples:
            # A counter also yields `<name>_created`: its value is `<name>_total`.
            if sample.name in (family.name, f"{family.name}_total"):
                return sample.value
    return 0.0


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("orderpush_connections", "Open WebSocket connections", registry=r)
        self.events_consumed = Counter(
            "orderpush_events_consumed", "Valid events read from the bus", registry=r
        )
        self.frames_sent = FastCounter(
            "orderpush_frames_sent", "Event frames sent to sockets", registry=r
        )
        self.poison_records = Counter(
            "orderpush_poison_records", "Malformed records set aside", registry=r
        )
        self.undecodable_batches = Counter(
            "orderpush_undecodable_batches",
            "Record batches the bus could not decode at all (codec, CRC), set aside",
            registry=r,
        )
        self.stale_dropped = Counter(
            "orderpush_stale_dropped", "order.* events dropped as not newer", registry=r
        )
        self.slow_closes = Counter(
            "orderpush_slow_client_closes", "Connections closed 4009 (send buffer full)", registry=r
        )
        self.rejected = Counter(
            "orderpush_rejected_connections", "Connections refused", ["reason"], registry=r
        )
        self.limited = Counter(
            "orderpush_limited",
            "Requests and sockets refused or closed by a limit (orderpush_core/limits.py)",
            ["limit"],
            registry=r,
        )
        self.routing_gaps = Counter(
            "orderpush_routing_gaps",
            "Times the cross-instance subscription dropped (histories re-read)",
            registry=r,
        )
        self.cursor_gap_fills = Counter(
            "orderpush_cursor_gap_fills",
            "Times a connection's cursor gap outlived its wait and was filled from history",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "orderpush_consumer_lag", "Records not yet consumed on assigned partitions", registry=r
        )
        self.push_latency = FastHistogram(
            "orderpush_push_latency_seconds",
            "From the record's bus timestamp to the frame handed to the socket",
            LATENCY_BUCKETS_S,
            registry=r,
        )
        # A bounded window of recent latencies for the operator page's quantiles.
        self._recent_ms: deque[float] = deque(maxlen=4096)
        self.started_at = time.time()

    def event_frame_sent(self, produced_ms: int) -> None:
        self.frames_sent.value += 1
        if produced_ms > 0:
            latency_ms = max(0.0, time.time() * 1000 - produced_ms)
            self.push_latency.observe_ms(latency_ms)
            self._recent_ms.append(latency_ms)

    def latency_quantiles_ms(self) -> dict[str, float | None]:
        recent = list(self._recent_ms)
        if len(recent) < 2:
            only = recent[0] if recent else None
            return {"p50": only, "p90": only, "p99": only, "max": only}
        cuts = quantiles(recent, n=100, method="inclusive")
        return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": max(recent)}

    def latency_histogram(self) -> list[dict[str, float]]:
        """Cumulative bucket counts of the recent window, for a bar chart."""
        recent = list(self._recent_ms)
        return [
            {"le_ms": b * 1000, "count": sum(1 for x in recent if x <= b * 1000)}
            for b in LATENCY_BUCKETS_S
        ]
