"""The report of a run: figures, verdict, exit code; as text and as JSON."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.ledger import Ledger

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


@dataclass(slots=True)
class ConnectionStats:
    """How opening and keeping the connections went."""

    planned: int = 0
    opened: int = 0
    failed: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    dropped: int = 0  # closed by the server and not (or not successfully) reopened
    reconnects: int = 0
    resumed: int = 0  # reconnections answered with `resumed`
    resnapshots: int = 0  # reconnections answered with a `snapshot` (history gone)
    close_codes: Counter[str] = field(default_factory=Counter)
    connect_ms: list[float] = field(default_factory=list)
    connect_s: float = 0.0
    by_url: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class TrafficStats:
    """What the load tester sent (events on the bus, or orders over HTTP)."""

    source: str = "bus"
    events_sent: int = 0
    orders_placed: int = 0
    api_errors: Counter[str] = field(default_factory=Counter)
    first_send_ns: int | None = None
    last_send_ns: int | None = None
    error: str | None = None  # the traffic could not be sent at all
    first_api_error: str | None = None

    @property
    def send_s(self) -> float:
        if self.first_send_ns is None or self.last_send_ns is None:
            return 0.0
        return (self.last_send_ns - self.first_send_ns) / 1e9


@dataclass(slots=True)
class Report:
    setup: dict[str, Any]
    connections: dict[str, Any]
    traffic: dict[str, Any]
    events_expected: int
    events_received: int
    events_matched: int
    other_events: int
    lost: int
    duplicated: int
    out_of_order: int
    wrong_user: int
    bad_frames: int
    latency_ms: dict[str, float | int | None]
    latency_basis: str
    throughput_eps: float
    delivery_window_s: float
    completed: bool
    examples: list[str]
    problems: list[str]
    #: Event frames dropped by the cursor rule (sent again by the server, never shown).
    repeats: int = 0

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        out["exit_code"] = self.exit_code
        return out

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float | int | None]:
    if not latencies_ns:
        return {"count": 0, "min": None, "p50": None, "p90": None, "p99": None, "max": None}
    values = sorted(ns / 1e6 for ns in latencies_ns)
    return {
        "count": len(values),
        "min": round(values[0], 3),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(values[-1], 3),
    }


def summarize(
    ledger: Ledger,
    *,
    connections: ConnectionStats,
    traffic: TrafficStats,
    setup: dict[str, Any] | None = None,
) -> Report:
    """The figures and the verdict of a finished run."""
    logs = ledger.attached_logs()
    frames = sum(log.frames for log in ledger.logs)
    duplicated = sum(log.duplicates for log in ledger.logs)
    repeats = sum(log.repeats for log in ledger.logs)
    out_of_order = sum(log.out_of_order for log in ledger.logs)
    wrong_user = sum(log.wrong_user for log in ledger.logs)
    bad_frames = sum(log.bad_frames for log in ledger.logs)
    lost = ledger.lost()
    matched = ledger.matched_total
    other = frames - matched - duplicated - wrong_user

    window_s = 0.0
    if traffic.first_send_ns is not None and ledger.last_arrival_ns is not None:
        window_s = max(0.0, (ledger.last_arrival_ns - traffic.first_send_ns) / 1e9)
    throughput = matched / window_s if window_s > 0 else 0.0

    problems: list[str] = []
    if lost:
        problems.append(f"{lost} event(s) LOST")
    if duplicated:
        problems.append(f"{duplicated} event(s) DUPLICATED")
    if out_of_order:
        problems.append(f"{out_of_order} event(s) OUT OF ORDER")
    if wrong_user:
        problems.append(f"{wrong_user} event(s) for the WRONG USER")
    if bad_frames:
        problems.append(f"{bad_frames} frame(s) not understood")
    if connections.failed:
        problems.append(f"{connections.failed} connection(s) failed to open")
    if connections.dropped:
        problems.append(f"{connections.dropped} connection(s) dropped")
    if traffic.error:
        problems.append(f"traffic not sent: {traffic.error}")
    if traffic.api_errors:
        problems.append(f"{sum(traffic.api_errors.values())} order(s) refused by the API")
    if not logs:
        problems.append("no connection opened")
    elif not ledger.expected_total and not traffic.error:
        problems.append("nothing was expected: no event was sent")

    examples = [ex for log in ledger.logs for ex in log.examples][:10]
    examples += ledger.lost_examples(max(0, 10 - len(examples)))

    latency_basis = (
        "POST /api/orders -> order.confirmed received"
        if traffic.source == "api"
        else "produced to the bus -> received"
    )
    return Report(
        setup=dict(setup or {}),
        connections={
            "planned": connections.planned,
            "opened": connections.opened,
            "failed": connections.failed,
            "failure_reasons": dict(connections.failure_reasons.most_common()),
            "dropped": connections.dropped,
            "reconnects": connections.reconnects,
            "resumed": connections.resumed,
            "resnapshots": connections.resnapshots,
            "close_codes": dict(connections.close_codes.most_common()),
            "connect_s": round(connections.connect_s, 3),
            "connect_ms": latency_summary([int(ms * 1e6) for ms in connections.connect_ms]),
            "by_url": connections.by_url,
        },
        traffic={
            "source": traffic.source,
            "events_sent": traffic.events_sent,
            "orders_placed": traffic.orders_placed,
            "api_errors": dict(traffic.api_errors.most_common()),
            "send_s": round(traffic.send_s, 3),
            "error": traffic.error,
            "first_api_error": traffic.first_api_error,
        },
        events_expected=ledger.expected_total,
        events_received=frames,
        events_matched=matched,
        other_events=other,
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        wrong_user=wrong_user,
        bad_frames=bad_frames,
        latency_ms=latency_summary(ledger.latencies_ns),
        latency_basis=latency_basis,
        throughput_eps=round(throughput, 1),
        delivery_window_s=round(window_s, 3),
        completed=ledger.complete.is_set(),
        examples=examples,
        problems=problems,
        repeats=repeats,
    )


def _ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_text(report: Report) -> str:
    """The report as an operator reads it in a terminal."""
    s, c, t, lat = report.setup, report.connections, report.traffic, report.latency_ms
    lines = [
        "Orderpush load test"
        + (
            f": {s.get('users')} users x {s.get('connections_per_user')} connection(s), "
            f"{s.get('events_per_user')} events/user, source={t['source']}, "
            f"{len(s.get('urls', []))} gateway(s)"
            if s
            else ""
        ),
        f"  connections   opened {c['opened']}/{c['planned']}  failed {c['failed']}  "
        f"dropped {c['dropped']}  reconnects {c['reconnects']}  "
        f"(connect {c['connect_s']:.2f} s, to snapshot p50 {_ms(c['connect_ms']['p50'])} ms, "
        f"max {_ms(c['connect_ms']['max'])} ms)",
    ]
    if c["failure_reasons"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in c["failure_reasons"].items())
        lines.append(f"  failures      {reasons}")
    if c["close_codes"]:
        codes = ", ".join(f"{k}: {v}" for k, v in c["close_codes"].items())
        lines.append(
            f"  closed by server  {codes}  (resumed {c['resumed']}, "
            f"snapshot instead {c['resnapshots']})"
        )
    if len(c["by_url"]) > 1:
        for url, figures in c["by_url"].items():
            lines.append(
                f"  {url}  opened {figures.get('opened', 0)}  failed {figures.get('failed', 0)}  "
                f"events {figures.get('events', 0)}"
            )
    sent = (
        f"{t['orders_placed']} orders placed"
        if t["source"] == "api"
        else f"{t['events_sent']} events produced"
    )
    if t["api_errors"]:
        sent += " (refused: " + ", ".join(f"{k}: {v}" for k, v in t["api_errors"].items()) + ")"
    lines += [
        f"  traffic       {sent} in {t['send_s']:.2f} s",
        f"  events        expected {report.events_expected}  received {report.events_matched}"
        f"  (frames {report.events_received}, other events {report.other_events})",
        f"  LOST          {report.lost}",
        f"  DUPLICATED    {report.duplicated}  (repeats dropped by the cursor rule: "
        f"{report.repeats})",
        f"  OUT OF ORDER  {report.out_of_order}",
        f"  WRONG USER    {report.wrong_user}",
        f"  latency ms    min {_ms(lat['min'])}  p50 {_ms(lat['p50'])}  p90 {_ms(lat['p90'])}  "
        f"p99 {_ms(lat['p99'])}  max {_ms(lat['max'])}  (n={lat['count']}, {report.latency_basis})",
        f"  throughput    {report.throughput_eps:.0f} events/s delivered "
        f"over {report.delivery_window_s:.2f} s",
    ]
    if t["first_api_error"]:
        lines.append(f"  first refusal {t['first_api_error']}")
    if report.bad_frames:
        lines.append(f"  bad frames    {report.bad_frames}")
    for example in report.examples:
        lines.append(f"  e.g. {example}")
    verdict = "PASS" if report.passed else "FAIL: " + "; ".join(report.problems)
    lines.append(f"  verdict       {verdict}")
    return "\n".join(lines)
