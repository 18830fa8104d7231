"""RedisSessionStore alone: publish throughput, Redis round trips per event,
and the event-loop stall of a lease heartbeat.

Three parts, against the Redis of `make services` (keys under a unique
prefix, deleted at the end):

1. Fixed batches: publish E events in batches of 1, 10, 100 and 500 over U
   users, half of them held by a second instance (so half the events are
   routed over pub/sub): events/s and round trips per event.
2. Paced, as the pump sees it: events arrive at `--rate` per second and the
   publishing loop takes whatever has arrived (at most 500) each time, for
   `--duration-s`: round trips per event and the achieved rate.
3. Heartbeat: `refresh_leases` for `--lease-users` local users; wall time and
   the longest stall of a 1 ms ticker running beside it.

    python bench/store_publish.py [--users 1000 --events 20000 --rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from bench._support import machine
from gateway.sessions import Delivery, Envelope
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.events import encode_event, make_event


def incoming(user: str, n: int) -> Envelope:
    event = make_event(
        "order.confirmed",
        order_id=f"ord-{user}-{n % 5}",
        user_id=user,
        status="confirmed",
        version=n + 1,
        data={"invoice_number": f"INV-{n:06d}", "n": n},
    )
    return Envelope(event=event, raw=encode_event(event), produced_ms=int(time.time() * 1000))


class Sink:
    def __init__(self) -> None:
        self.received = 0

    def deliver(self, batch: Sequence[Delivery]) -> None:
        self.received += len(batch)


async def fixed_batches(a: RedisSessionStore, users: list[str], events: int) -> None:
    print("fixed batches: size, events/s, round trips per event")
    n = 0
    for size in (1, 10, 100, 500):
        count = min(events, 2000) if size == 1 else events
        before = a.round_trips
        start = time.perf_counter()
        for _ in range(0, count, size):
            batch = [incoming(users[(n + i) % len(users)], n + i) for i in range(size)]
            n += size
            await a.publish(batch)
        elapsed = time.perf_counter() - start
        trips = (a.round_trips - before) / count
        print(f"  {size:4d}  {count / elapsed:9.0f}/s  {trips:.3f}")


async def paced(a: RedisSessionStore, users: list[str], rate: float, duration_s: float) -> None:
    queue: list[Envelope] = []
    done = asyncio.Event()

    async def produce() -> None:
        start = time.perf_counter()
        n = 0
        while (now := time.perf_counter() - start) < duration_s:
            due = int(now * rate)
            while n < due:
                queue.append(incoming(users[n % len(users)], n))
                n += 1
            await asyncio.sleep(0.001)
        done.set()

    producer = asyncio.create_task(produce())
    before = a.round_trips
    published = 0
    batches = 0
    start = time.perf_counter()
    while not (done.is_set() and not queue):
        if not queue:
            await asyncio.sleep(0.001)
            continue
        batch, queue[:] = queue[:500], queue[500:]
        await a.publish(batch)
        published += len(batch)
        batches += 1
    elapsed = time.perf_counter() - start
    await producer
    trips = (a.round_trips - before) / max(1, published)
    print(
        f"paced at {rate:.0f}/s for {duration_s:.0f} s: published {published / elapsed:.0f}/s, "
        f"mean batch {published / max(1, batches):.1f}, round trips per event {trips:.3f}"
    )


async def heartbeat(b: RedisSessionStore, count: int) -> None:
    users = [f"lease{i}" for i in range(count)]
    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    for user in users[: min(count, 500)]:
        await b.add_session(user)
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    for label in ("first beat", "second beat"):
        stalls.clear()
        start = time.perf_counter()
        await b.refresh_leases(users)
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.02)
        print(
            f"heartbeat, {count} local users, {label}: {elapsed * 1000:.1f} ms, "
            f"longest loop stall {max(stalls) * 1000:.1f} ms"
        )
    stop.set()
    await tick


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--duration-s", type=float, default=10)
    parser.add_argument("--lease-users", type=int, default=5000)
    args = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    users = [f"u{i}" for i in range(args.users)]
    sink = Sink()
    a = RedisSessionStore(args.redis, f"{prefix}-a", key_prefix=prefix)
    b = RedisSessionStore(args.redis, f"{prefix}-b", key_prefix=prefix)
    await a.start(Sink().deliver)
    await b.start(sink.deliver)
    print(machine())
    try:
        await b.refresh_leases(users[::2])  # half the users live on b: routed
        await fixed_batches(a, users, args.events)
        await paced(a, users, args.rate, args.duration_s)
        await heartbeat(b, args.lease_users)
        print(f"routed to b: {sink.received} events")
    finally:
        await a.stop()
        await b.stop()
        client = Redis.from_url(args.redis)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
