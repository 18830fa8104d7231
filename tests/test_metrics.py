"""The public read of a metric's value used by `/api/stats`, and the
per-frame metrics' exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.hot_metrics import FastCounter, FastHistogram
from gateway.metrics import LATENCY_BUCKETS_S, GatewayMetrics, current


def test_current_reads_counters_and_gauges() -> None:
    metrics = GatewayMetrics()
    assert current(metrics.frames_sent) == 0
    metrics.frames_sent.inc(3)
    metrics.consumer_lag.set(7)
    assert current(metrics.frames_sent) == 3
    assert current(metrics.consumer_lag) == 7


def test_fast_metrics_scrape_like_prometheus_clients_own() -> None:
    """The per-frame counter and histogram count in plain numbers but are
    exposed exactly as prometheus_client's Counter and Histogram would be."""
    values_ms = [
        0.2,
        1.0,
        1.7,
        2.5,
        4.9,
        9.0,
        30.0,
        49.9,
        50.0,
        120.0,
        400.0,
        900.0,
        3000.0,
        9000.0,
    ]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("lat_seconds", "doc", LATENCY_BUCKETS_S, ours)
    slow = Histogram("lat_seconds", "doc", buckets=LATENCY_BUCKETS_S, registry=theirs)
    fast_count = FastCounter("frames", "doc", ours)
    slow_count = Counter("frames", "doc", registry=theirs)
    for value in values_ms:
        fast.observe_ms(value)
        slow.observe(value / 1000)
        fast_count.inc()
        slow_count.inc()

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, expected = samples(ours), samples(theirs)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert fast.count == len(values_ms)
    assert current(fast_count) == len(values_ms)
