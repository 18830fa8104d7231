"""Redis restarted empty while users order: Kafka rebuilds what Redis lost.

Two gateway processes and the stubs on the shared Kafka broker (a unique
prefix); Redis is a private one without persistence, so a SIGKILL and a
start bring it back empty, as a cache server restarted with nothing. Users
keep placing orders through the storefront; their clients stay connected
(reconnecting, with their cursor, when a gateway asks them to).

Verdict:
- every order's final status reaches its user's client (lost 0), and
- no client ever shows an order at a version older than one it showed
  (events and snapshots alike), nor loses an order it showed;
- a new connection's snapshot equals the storefront's view (every order,
  current status) within 30 s of the restart (the gateway rebuilt the order
  views from the compacted `order-state` topic: gateway/rebuild.py).

A FIGURES line reports the figures (`pytest ... -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from gateway.drain import retry_after_ms
from tests.backends import KAFKA_BOOTSTRAP, unique
from tests.faults import poll_until
from tests.harness import Process, cluster
from tests.processes import PrivateRedis
from tests.stubs_support import SECRET, auth, order_body
from tests.wsclient import connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

USERS = 8
ORDERS_PER_USER = 10
PLACE_EVERY_S = 0.1


@dataclass
class Shown:
    """A client as a page is: what it shows per order, from snapshots and
    events; counts every step backwards."""

    user: str
    addrs: list[str]
    shown: dict[str, int] = field(default_factory=dict)
    cursor: str | None = None
    regressions: list[str] = field(default_factory=list)
    twice: int = 0
    connects: int = 0
    snapshots: int = 0
    _seen: set[str] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        attempt = 0
        while True:
            addr = self.addrs[attempt % len(self.addrs)]
            attempt += 1
            wait_s = 0.2
            with contextlib.suppress(OSError, TimeoutError, websockets.WebSocketException):
                wait_s = await self._session(addr)
            await asyncio.sleep(wait_s)

    async def _session(self, addr: str) -> float:
        async with websockets.connect(f"ws://{addr}/ws", open_timeout=5) as ws:
            message: dict[str, Any] = {
                "type": "auth",
                "token": auth(self.user)["Authorization"][7:],
            }
            if self.cursor is not None:
                message["cursor"] = self.cursor
            await ws.send(json.dumps(message))
            self.connects += 1
            with contextlib.suppress(websockets.ConnectionClosed):
                async for data in ws:
                    self._on(json.loads(data))
            hinted = retry_after_ms(ws.close_reason or "")
            return hinted / 1000 if hinted is not None else 0.2

    def _on(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "snapshot":
            self.snapshots += 1
            got = {o["order_id"]: o["version"] for o in message["orders"]}
            for order_id, version in self.shown.items():
                if got.get(order_id, 0) < version:
                    self.regressions.append(
                        f"snapshot {order_id} v{got.get(order_id)} < v{version}"
                    )
            self.shown = got
        elif kind == "event":
            event = message["event"]
            if event["event_id"] in self._seen:
                self.twice += 1
            self._seen.add(event["event_id"])
            if event["type"].startswith("order.") and event["version"] > self.shown.get(
                event["order_id"], 0
            ):
                self.shown[event["order_id"]] = event["version"]
        if kind in ("snapshot", "event", "resumed"):
            self.cursor = message["cursor"]


async def storefront_view(http: httpx.AsyncClient, user: str) -> dict[str, tuple[str, int]]:
    listed = (await http.get("/api/orders", headers=auth(user))).json()["orders"]
    return {o["order_id"]: (o["status"], o["version"]) for o in listed if o["version"] > 0}


async def snapshot_of(addr: str, user: str) -> dict[str, tuple[str, int]]:
    async with connect(addr, auth(user)["Authorization"][7:]) as client:
        snapshot = await client.recv_type("snapshot", timeout_s=15)
    return {o["order_id"]: (o["status"], o["version"]) for o in snapshot["orders"]}


async def test_redis_restarted_empty_loses_nothing_and_the_views_are_rebuilt(
    tmp_path: Path,
) -> None:
    prefix = unique("rr")
    redis = PrivateRedis(tmp_path / "redis", persistent=False)
    redis.start()
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": redis.url,
        "ORDERPUSH_DEV_MODE": "true",
        "ORDERPUSH_LEASE_TTL_S": "3",
        "ORDERPUSH_ORDERS_PER_MINUTE": "100000",
    }
    users = [f"u{n}-{prefix}" for n in range(USERS)]
    try:
        with cluster() as running:
            stubs = running.start(
                "stubs", ["stubs", "--data-dir", str(tmp_path / "d")], env, tmp_path
            )
            await asyncio.to_thread(running.wait_healthy, stubs)
            gateways: list[Process] = [
                running.start(
                    name,
                    ["gateway", "--instance-id", name, "--storefront-url", stubs.http],
                    env,
                    tmp_path,
                )
                for name in ("gw-a", "gw-b")
            ]
            for gateway in gateways:
                await asyncio.to_thread(running.wait_healthy, gateway)
            addrs = [g.addr for g in gateways]
            clients = [Shown(u, addrs[n % 2 :] + addrs[: n % 2]) for n, u in enumerate(users)]
            for client in clients:
                client.start()
            try:
                await run(stubs, redis, users, clients, gateways)
            finally:
                for client in clients:
                    await client.stop()
    finally:
        redis.stop()


async def run(
    stubs: Process,
    redis: PrivateRedis,
    users: list[str],
    clients: list[Shown],
    gateways: list[Process],
) -> None:
    addrs = [g.addr for g in gateways]
    for client in clients:
        await poll_until(f"{client.user} connected", _ready(client), 30, 0.1)
    async with httpx.AsyncClient(base_url=stubs.http, timeout=30) as http:
        placed: list[str] = []

        async def place_all() -> None:
            for _ in range(ORDERS_PER_USER):
                for user in users:
                    answer = await http.post(
                        "/api/orders", json=order_body("SKU-1"), headers=auth(user)
                    )
                    assert answer.status_code == 202, answer.text
                    placed.append(answer.json()["order_id"])
                    await asyncio.sleep(PLACE_EVERY_S)

        flow = asyncio.create_task(place_all())
        try:
            await poll_until("orders flowing", _count(placed, USERS * 3), 60, 0.1)
            redis.kill()
            # What the clients must show, at least, once they are current again.
            at_restart = {u: await storefront_view(http, u) for u in users}
            redis.start()  # empty: no persistence
            restarted_at = time.monotonic()
            assert not flow.done()

            async def caught_up() -> bool:
                return all(
                    c.shown.get(o, 0) >= version
                    for c in clients
                    for o, (_, version) in at_restart[c.user].items()
                )

            async def time_to_catch_up() -> float:
                await poll_until("caught up", caught_up, 60, 0.1)
                return time.monotonic() - restarted_at

            caught_up_task = asyncio.create_task(time_to_catch_up())

            # A new connection's snapshot equals the storefront's view.
            async def snapshots_equal() -> bool:
                for n, user in enumerate(users):
                    view = await storefront_view(http, user)
                    with contextlib.suppress(Exception):
                        if await snapshot_of(addrs[n % 2], user) == view and view:
                            continue
                    return False
                return True

            await poll_until("snapshots equal the storefront's view", snapshots_equal, 30, 0.5)
            equal_after_s = time.monotonic() - restarted_at
            current_after_s = await caught_up_task
            await asyncio.wait_for(flow, 120)
        finally:
            flow.cancel()

        views: dict[str, dict[str, tuple[str, int]]] = {u: {} for u in users}

        async def all_confirmed() -> bool:
            for user in users:
                views[user] = await storefront_view(http, user)
            return sum(1 for v in views.values() for s, _ in v.values() if s == "confirmed") == len(
                placed
            )

        await poll_until("every order confirmed", all_confirmed, 90, 0.5)

        async def clients_current() -> bool:
            return all(
                c.shown.get(o, 0) >= version
                for c in clients
                for o, (_, version) in views[c.user].items()
            )

        await poll_until("every client current", clients_current, 60, 0.5)
        lost = sum(
            1
            for c in clients
            for o, (_, version) in views[c.user].items()
            if c.shown.get(o, 0) < version
        )
        regressions = [r for c in clients for r in c.regressions]
        twice = sum(c.twice for c in clients)
        for n, user in enumerate(users):
            assert await snapshot_of(addrs[(n + 1) % 2], user) == views[user]
        rebuilds = 0
        async with httpx.AsyncClient(timeout=5) as admin:
            for gateway in gateways:
                rebuilds += (await admin.get(gateway.admin + "/api/stats")).json()["view_rebuilds"]
        # Once at the first start (a new cluster), once after the restart.
        assert rebuilds >= 2, rebuilds
        print(
            f"FIGURES Redis restarted empty: orders {len(placed)}, lost {lost}, shown twice "
            f"{twice}, regressions {len(regressions)}, snapshots equal to the storefront "
            f"{equal_after_s:.2f}s after the restart, every client showing all it showed "
            f"before {current_after_s:.2f}s after it, reconnects "
            f"{sum(c.connects for c in clients) - USERS}"
        )
        assert lost == 0
        assert regressions == []


def _ready(client: Shown) -> Any:
    async def check() -> bool:
        return client.snapshots >= 1

    return check


def _count(placed: list[str], count: int) -> Any:
    async def check() -> bool:
        return len(placed) >= count

    return check
