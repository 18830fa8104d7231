"""Redis memory over a long run at a steady event rate: does it stay flat?

A private redis-server (no persistence, a free port) and two
RedisSessionStore instances: `a` publishes `--rate` events per second in
batches every 10 ms; `b` holds sessions of the active users (so half of the
events are routed over pub/sub) and connects/disconnects them as they come
and go. The active users rotate: every `--rotate-s` seconds half of them go
quiet for good and as many new ones start, so without idle expiry every
user ever seen would stay in Redis. Every 10 s it prints `used_memory` and
the number of keys; at the end, the figures for bench/README.md.

    python bench/redis_memory.py [--rate 1000 --duration-s 600 --idle-s 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from bench._support import machine
from gateway.sessions import Delivery, Envelope
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.events import encode_event, make_event
from tests.harness import free_port


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--dir", data_dir, "--save", "", "--appendonly", "no"]
        command += ["--logfile", f"{data_dir}/redis.log"]
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def incoming(user: str, n: int) -> Envelope:
    event = make_event(
        "order.confirmed",
        order_id=f"ord-{user}-{n % 3}",
        user_id=user,
        status="confirmed",
        version=n + 1,
        data={"invoice_number": f"INV-{n:08d}"},
    )
    return Envelope(event=event, raw=encode_event(event), produced_ms=int(time.time() * 1000))


class Sink:
    def __init__(self) -> None:
        self.received = 0

    def deliver(self, batch: Sequence[Delivery]) -> None:
        self.received += len(batch)


def active_users(elapsed_s: float, users: int, rotate_s: float) -> list[str]:
    """Half the population is replaced every `rotate_s`."""
    start = int(elapsed_s // rotate_s) * (users // 2)
    return [f"u{n}" for n in range(start, start + users)]


async def run(url: str, args: argparse.Namespace) -> None:
    client = Redis.from_url(url)
    for _ in range(100):
        with contextlib.suppress(Exception):
            await client.ping()
            break
        await asyncio.sleep(0.05)
    # Any: the keys are RedisSessionStore keywords, checked by inspect below.
    options: dict[str, Any] = {"history_idle_s": args.idle_s}
    if "history_idle_s" not in inspect.signature(RedisSessionStore).parameters:
        options = {}  # a version without idle expiry, for comparison
        print("this RedisSessionStore has no idle expiry")
    a = RedisSessionStore(url, "bench-a", history_max=args.history_max, **options)
    b = RedisSessionStore(url, "bench-b", history_max=args.history_max, **options)
    sink = Sink()
    await a.start(Sink().deliver)
    await b.start(sink.deliver)
    print(machine())
    print(
        f"rate {args.rate:.0f}/s, {args.users} active users (half replaced every "
        f"{args.rotate_s:.0f} s), idle expiry {args.idle_s:.0f} s, history max {args.history_max}"
    )
    samples: list[tuple[float, int, int]] = []
    held: set[str] = set()
    start = time.monotonic()
    next_sample = 0.0
    published = 0
    try:
        while (elapsed := time.monotonic() - start) < args.duration_s:
            users = active_users(elapsed, args.users, args.rotate_s)
            wanted = set(users[::2])  # b holds every other active user
            for user in wanted - held:
                await b.add_session(user)
            for user in held - wanted:
                await b.remove_session(user)
            held = wanted
            due = int(elapsed * args.rate)
            batch = [incoming(users[n % len(users)], n) for n in range(published, due)]
            if batch:
                await a.publish(batch)
                published += len(batch)
            if elapsed >= next_sample:
                await b.refresh_leases(sorted(held))  # the heartbeat, every 10 s
                info = await client.info("memory")
                keys = await client.dbsize()
                samples.append((elapsed, int(info["used_memory"]), keys))
                print(
                    f"  {elapsed:6.0f} s  used_memory {info['used_memory'] / 2**20:7.2f} MiB  "
                    f"keys {keys:6d}  published {published}",
                    flush=True,
                )
                next_sample += 10.0
            await asyncio.sleep(0.01)
    finally:
        await a.stop()
        await b.stop()
        await client.aclose()
    print(f"published {published}, routed to b {sink.received}")
    half = [m for t, m, _ in samples if t >= args.duration_s / 2]
    if half:
        print(
            f"second half of the run: used_memory min {min(half) / 2**20:.2f} MiB, "
            f"max {max(half) / 2**20:.2f} MiB; at the end {samples[-1][1] / 2**20:.2f} MiB, "
            f"{samples[-1][2]} keys"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rotate-s", type=float, default=30)
    parser.add_argument("--idle-s", type=float, default=60)
    parser.add_argument("--history-max", type=int, default=1000)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(run(url, args))


if __name__ == "__main__":
    main()
