"""Metrics updated for every frame, counted in plain Python numbers.

prometheus_client's Counter and Histogram take a lock for every update and
a histogram observation updates three values: 30% of the hub's own time
per frame at 6,000 frames/s (cProfile of `Hub.deliver`). These two keep
plain counts and hand Prometheus the same families when it scrapes (the
event loop is one thread, so nothing else updates them meanwhile).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


class FastCounter:
    """A monotonic counter (`<name>_total` when scraped)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class FastHistogram:
    """A histogram of milliseconds, exported in seconds like prometheus_client's."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets_s: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.buckets_s = tuple(buckets_s)
        self._bounds_ms = [b * 1000 for b in self.buckets_s]
        # One count per bucket, the last for values above every bound (+Inf).
        self._counts = [0] * (len(self.buckets_s) + 1)
        self._sum_ms = 0.0
        registry.register(self)

    def observe_ms(self, value_ms: float) -> None:
        self._counts[bisect_left(self._bounds_ms, value_ms)] += 1
        self._sum_ms += value_ms

    @property
    def count(self) -> int:
        return sum(self._counts)

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound_s, count in zip(self.buckets_s, self._counts, strict=False):
            cumulative += count
            buckets.append((repr(float(bound_s)), cumulative))
        buckets.append(("+Inf", cumulative + self._counts[-1]))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self._sum_ms / 1000
        )
