"""`orderpush gateway --workers 2`: two processes on one port, each its own
consumer group member with its own instance id, on the real Kafka and Redis;
clients on either worker get exactly their own events."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderpush_core.auth import issue_token
from orderpush_core.bus import OutgoingRecord
from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.events import encode_event, make_event
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.harness import Process, cluster
from tests.wsclient import Client, connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

SECRET = "workers-test-secret-0123456789abcdef0123"
USERS = 24


def answers(process: Process, path: str, want: int, timeout_s: float = 60) -> dict[str, Any]:
    """GET `path` on fresh connections until `want` different instances have
    answered 200; the last answer of each, by instance id."""
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.popen.poll() is None, process.log()
        with contextlib.suppress(httpx.HTTPError):
            # A new client each time: a new TCP connection, which the kernel
            # may hand to the other worker.
            with httpx.Client(trust_env=False, timeout=2) as http:
                response = http.get(process.http + path)
            if response.status_code == 200:
                body = response.json()
                seen[body["instance_id"]] = body
                if len(seen) >= want:
                    return seen
        time.sleep(0.05)
    raise AssertionError(f"only {sorted(seen)} answered {path} in {timeout_s}s:\n{process.log()}")


def admin_stats(process: Process, workers: int) -> dict[str, Any]:
    """/api/stats of each worker, from its admin listener (port + worker index)."""
    assert process.admin_port is not None
    seen: dict[str, Any] = {}
    with httpx.Client(trust_env=False, timeout=5) as http:
        for index in range(workers):
            body = http.get(f"http://127.0.0.1:{process.admin_port + index}/api/stats").json()
            seen[body["instance_id"]] = body
    return seen


@contextlib.asynccontextmanager
async def clients(process: Process, users: list[str]) -> AsyncIterator[dict[str, Client]]:
    async with contextlib.AsyncExitStack() as stack:
        connected: dict[str, Client] = {}
        for user in users:
            client = await stack.enter_async_context(
                connect(process.addr, issue_token(user, SECRET))
            )
            await client.recv_type("snapshot")
            connected[user] = client
        yield connected


async def test_two_workers_serve_one_port_and_each_client_gets_its_events(
    tmp_path: Path,
) -> None:
    prefix = unique("wk")
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
    }
    users = [f"w{n:02d}-{prefix}" for n in range(USERS)]
    with cluster() as running:
        gateway = running.start(
            "gw", ["gateway", "--instance-id", "gwk", "--workers", "2"], env, tmp_path
        )
        # Both workers answer on the one port, each a group member of its own
        # holding part of the 20 partitions (5 topics x 4).
        ready = await asyncio.to_thread(answers, gateway, "/readyz", 2)
        assert sorted(ready) == ["gwk-w0", "gwk-w1"]
        deadline = time.monotonic() + 60
        while sum(r["partitions"] for r in ready.values()) != 20 or not all(
            r["partitions"] > 0 for r in ready.values()
        ):
            assert time.monotonic() < deadline, ready
            ready = await asyncio.to_thread(answers, gateway, "/readyz", 2)

        async with clients(gateway, users) as connected:
            stats = await asyncio.to_thread(admin_stats, gateway, 2)
            per_worker = {i: s["connections"] for i, s in stats.items()}
            # 24 connections spread by the kernel: each worker holds some.
            assert sum(per_worker.values()) == USERS, per_worker
            assert all(n > 0 for n in per_worker.values()), per_worker

            events = {
                user: make_event(
                    "order.pending", order_id=f"o-{user}", user_id=user, status="pending", version=1
                )
                for user in users
            }
            bus = KafkaEventBus(KAFKA_BOOTSTRAP, topic_prefix=prefix)
            await bus.start()
            try:
                await bus.publish(
                    [OutgoingRecord("orders", e.order_id, encode_event(e)) for e in events.values()]
                )
            finally:
                await bus.stop()
            for user, client in connected.items():
                (got,) = await client.events(1, timeout_s=30)
                assert got["event"]["event_id"] == events[user].event_id
                assert got["event"]["user_id"] == user
            for client in connected.values():
                assert await client.silent(0.05)

        # Both workers consumed part of the events (each reads its partitions).
        stats = await asyncio.to_thread(admin_stats, gateway, 2)
        assert sum(s["events_consumed"] for s in stats.values()) == USERS, stats

        # SIGTERM to the command reaches every worker; all exit cleanly.
        gateway.popen.send_signal(signal.SIGTERM)
        assert gateway.popen.wait(60) == 0, gateway.log()
        log = gateway.log_path.read_text(errors="replace")
    assert "2 gateway workers" in log
    assert "[w0]" in log and "[w1]" in log


async def test_workers_flag_is_checked(tmp_path: Path) -> None:
    from orderpush.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["gateway", "--workers", "0"])
    assert exit_info.value.code == 2
