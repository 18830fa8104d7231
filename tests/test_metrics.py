"""The public read of a metric's value used by `/api/stats`."""

from __future__ import annotations

from gateway.metrics import GatewayMetrics, current


def test_current_reads_counters_and_gauges() -> None:
    metrics = GatewayMetrics()
    assert current(metrics.frames_sent) == 0
    metrics.frames_sent.inc(3)
    metrics.consumer_lag.set(7)
    assert current(metrics.frames_sent) == 3
    assert current(metrics.consumer_lag) == 7
