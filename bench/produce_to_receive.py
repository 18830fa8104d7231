"""Produce -> receive on the distributed path: Kafka, Redis, two gateway processes.

What it measures: two `orderpush gateway` processes on free ports, on the
real Kafka and Redis (`make services`), with a topic prefix, consumer group
and Redis key prefix of their own. The load tester (`loadtest.run_loadtest`,
in this process) connects every user twice, one socket on each gateway, so
each event is delivered once by the instance that consumed it and once
through Redis by the other. It produces 1,000 order events straight to
Kafka, each stamped with its wall-clock send time, and reports the time
from the produce call to the frame's arrival at the client (median, p99),
plus delivery correctness (lost / duplicated / out of order / wrong user).
From the gateways' GET /api/stats it derives Redis round trips per delivered
event (`session_round_trips` / `frames_sent`): batching keeps it well below 1.

Run it (needs Kafka on 127.0.0.1:9092 and Redis on 127.0.0.1:6379):

    make services
    python bench/produce_to_receive.py
    python bench/produce_to_receive.py --users 200 --events 2000 --duration-s 10

The clients share this process's CPU with nothing else but each other; the
gateways run in their own processes. It prints figures; it never passes or
fails on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._support import machine
from gateway.settings import DEV_SECRET
from loadtest.config import LoadtestConfig
from loadtest.report import Report, format_text
from loadtest.runner import run_loadtest
from tests.harness import cluster


async def stats(urls: list[str]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        out: list[dict[str, Any]] = []
        for url in urls:
            response = await http.get(url + "/api/stats")
            response.raise_for_status()
            out.append(response.json())
        return out


def delta(new: dict[str, Any], old: dict[str, Any], name: str) -> float | None:
    if new.get(name) is None or old.get(name) is None:
        return None
    return float(new[name]) - float(old[name])


def main() -> None:
    parser = argparse.ArgumentParser(description="produce -> receive over Kafka + Redis")
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="HOST:PORT of the broker")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--users", type=int, default=100, help="users (2 sockets each)")
    parser.add_argument("--events", type=int, default=1000, help="events to produce")
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="spread them over this time (0: burst)"
    )
    args = parser.parse_args()
    if args.events % args.users:
        parser.error("--events must be a multiple of --users")

    run = uuid.uuid4().hex[:8]
    prefix = f"bench{run}."
    # Own Redis keys too, so nothing mixes with another run on the same server.
    env = {"ORDERPUSH_JWT_SECRET": DEV_SECRET, "ORDERPUSH_SESSION_KEY_PREFIX": f"bench{run}"}
    flags = ["--bus", f"kafka://{args.kafka}", "--sessions", args.redis, "--topic-prefix", prefix]
    with tempfile.TemporaryDirectory() as logs, cluster() as running:
        gateways = [
            running.start(
                name, ["gateway", *flags, "--instance-id", f"{name}-{run}"], env, Path(logs)
            )
            for name in ("gw-a", "gw-b")
        ]
        for gateway in gateways:
            running.wait_healthy(gateway)
        urls = [g.admin for g in gateways]
        before: list[dict[str, Any]] = []

        async def read_counters() -> None:
            before.extend(await stats(urls))

        config = LoadtestConfig(
            urls=tuple(g.ws for g in gateways),
            users=args.users,
            connections_per_user=2,
            events_per_user=args.events // args.users,
            source="bus",
            bus_url=f"kafka://{args.kafka}",
            topic_prefix=prefix,
            secret=DEV_SECRET,
            duration_s=args.duration_s,
            timeout_s=20.0,
            # Below the gateways' Redis pool (100 connections, non-blocking): more
            # concurrent handshakes than that fail with MaxConnectionsError.
            connect_concurrency=50,
            run_id=run,
        )

        async def measure() -> tuple[Report, list[dict[str, Any]]]:
            report = await run_loadtest(config, before_traffic=read_counters)
            return report, await stats(urls)

        report, after = asyncio.run(measure())

    print(f"produce -> receive, 2 gateway processes, Kafka + Redis ({machine()})")
    print(format_text(report))
    lat = report.latency_ms
    print(
        f"  => {report.traffic['events_sent']} events produced, "
        f"{report.events_matched} deliveries: produce->receive median {lat['p50']} ms, "
        f"p99 {lat['p99']} ms, max {lat['max']} ms"
    )
    if len(before) != len(after):
        return
    frames_all = trips_all = 0.0
    for gateway, old, new in zip(gateways, before, after, strict=True):
        frames = delta(new, old, "frames_sent") or 0.0
        consumed = delta(new, old, "events_consumed") or 0.0
        trips = delta(new, old, "session_round_trips")
        if trips is None:
            print(f"  {gateway.name}: {frames:.0f} frames sent; /api/stats has no round trips")
            continue
        frames_all += frames
        trips_all += trips
        print(
            f"  {gateway.name}: consumed {consumed:.0f} events, sent {frames:.0f} frames, "
            f"{trips:.0f} Redis round trips during the traffic"
        )
    if frames_all:
        print(
            f"  => Redis round trips per delivered event: {trips_all / frames_all:.3f} "
            f"({trips_all:.0f} / {frames_all:.0f}; lease refreshes included)"
        )


if __name__ == "__main__":
    main()
