"""Fan-out throughput of one gateway instance on the in-memory backends.

What it measures, in two parts:

1. The hub alone (no I/O): `Hub.deliver` hands batches of deliveries to N
   local connections' send queues, as the pump does after a batch. Two
   shapes: N users with one socket each (every event goes to one socket),
   and one user with N sockets (every event goes to all of them). Printed:
   frames enqueued per second. The queues are drained outside the timing.
2. Real sockets: a gateway (`create_app` on the memory bus and memory
   session store) under uvicorn in this process, N WebSocket clients of the
   load tester in the same process, events produced onto the gateway's bus.
   The events are produced in one burst. Printed: events delivered per
   second end to end (bus -> pump -> hub -> socket -> client) and
   produce->receive latency, which under a burst is mostly queueing. Server and clients share
   one event loop and one core, so this is a floor, not the gateway's ceiling.

Run it (no Kafka, no Redis needed):

    python bench/fanout_memory.py
    python bench/fanout_memory.py --sockets 1000 --users 500 --socket-events 10000

It prints figures; it never passes or fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import machine
from gateway.envelope import Envelope
from gateway.hub import Connection, Hub
from gateway.metrics import GatewayMetrics
from gateway.sessions.base import Delivery
from gateway.settings import DEV_SECRET, Settings
from loadtest.config import LoadtestConfig
from loadtest.runner import run_loadtest
from orderpush.apps import gateway_app
from orderpush_core.bus.memory import MemoryEventBus
from orderpush_core.events import encode_event, make_event
from tests.harness import serve

BATCH = 500


def _deliveries(user_ids: list[str], count: int) -> list[Delivery]:
    """`count` deliveries spread round-robin over `user_ids`, cursors increasing."""
    base_ms = int(time.time() * 1000)
    out: list[Delivery] = []
    for i in range(count):
        user = user_ids[i % len(user_ids)]
        event = make_event(
            "order.pending", order_id=f"o{i}", user_id=user, status="pending", version=1
        )
        envelope = Envelope(event=event, raw=encode_event(event), produced_ms=base_ms)
        out.append(Delivery(user_id=user, cursor=f"{base_ms}-{i}", envelope=envelope))
    return out


def hub_rate(users: int, sockets_per_user: int, events: int) -> float:
    """Frames enqueued per second by Hub.deliver."""
    metrics = GatewayMetrics()
    hub = Hub(metrics)
    user_ids = [f"u{i}" for i in range(users)]
    conns = []
    for user in user_ids:
        for s in range(sockets_per_user):
            conn = Connection(user, f"{user}-{s}", BATCH * 2, metrics)
            conn.go_live()
            hub.add(conn)
            conns.append(conn)
    deliveries = _deliveries(user_ids, events)
    frames = 0
    elapsed = 0.0
    for start in range(0, events, BATCH):
        batch = deliveries[start : start + BATCH]
        began = time.perf_counter()
        hub.deliver(batch)
        elapsed += time.perf_counter() - began
        for conn in conns:  # drain, untimed, like the senders would
            frames += conn.queue.qsize()
            while not conn.queue.empty():
                conn.queue.get_nowait()
    closed = sum(conn.closing is not None for conn in conns)
    if closed:
        print(f"  (warning: {closed} connections closed as too slow)")
    return frames / elapsed


async def socket_rate(sockets: int, users: int, events: int) -> None:
    bus = MemoryEventBus()
    app = gateway_app(Settings(sessions_url="memory://bench-fanout"), bus=bus)
    async with serve(app) as addr:
        config = LoadtestConfig(
            urls=(f"ws://{addr}/ws",),
            users=users,
            connections_per_user=sockets // users,
            events_per_user=events // users,
            source="bus",
            bus_url="kafka://127.0.0.1:9092",  # checked only: the bus is handed in
            secret=DEV_SECRET,
            timeout_s=120.0,
            settle_s=0.2,
        )
        report = await run_loadtest(config, bus=bus)
    lat = report.latency_ms
    print(
        f"  {users} users x {sockets // users} sockets, {report.traffic['events_sent']} events "
        f"-> {report.events_matched} deliveries: {report.throughput_eps:.0f} events/s delivered; "
        f"produce->receive p50 {lat['p50']} ms, p99 {lat['p99']} ms; "
        f"lost {report.lost}, dup {report.duplicated}, out of order {report.out_of_order}, "
        f"wrong user {report.wrong_user}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="hub fan-out throughput, in-memory")
    parser.add_argument("--sockets", type=int, default=500, help="local sockets (default 500)")
    parser.add_argument(
        "--events", type=int, default=20_000, help="events through the hub (default 20000)"
    )
    parser.add_argument(
        "--socket-events",
        type=int,
        default=5_000,
        help="events produced in the socket run (default 5000)",
    )
    parser.add_argument(
        "--users", type=int, default=250, help="users in the socket run (default 250)"
    )
    args = parser.parse_args()
    if args.sockets % args.users or args.socket_events % args.users:
        parser.error("--sockets and --socket-events must be multiples of --users")

    print(f"fan-out, in-memory backends ({machine()})")
    print("1. Hub.deliver -> send queues (no I/O)")
    rate = hub_rate(args.sockets, 1, args.events)
    print(f"  {args.sockets} users x 1 socket, {args.events} events: {rate:,.0f} frames/s")
    rate = hub_rate(1, args.sockets, args.events // 10)
    print(f"  1 user x {args.sockets} sockets, {args.events // 10} events: {rate:,.0f} frames/s")
    print("2. bus -> gateway -> real WebSocket clients (one process, one loop)")
    asyncio.run(socket_rate(args.sockets, args.users, args.socket_events))


if __name__ == "__main__":
    main()
