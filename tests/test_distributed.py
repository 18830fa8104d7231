"""The distributed gateway: the stubs and two gateway instances as separate
processes, on the real Kafka broker and the real Redis (`make services`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from orderpush_core.auth import issue_token
from orderpush_core.events import encode_event, make_event
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.harness import Process, cluster
from tests.wsclient import Client, connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

SECRET = "distributed-test-secret-0123456789abcdef"
ORDER = {"items": [{"sku": "SKU-1", "qty": 1}], "payment": {"card": "4242424242424242"}}


@dataclass
class Stack:
    prefix: str
    stubs: Process
    gateways: list[Process]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = unique("d")
    logs = tmp_path_factory.mktemp("logs")
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_DEV_MODE": "true",
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
    }
    with cluster() as running:
        stubs = running.start("stubs", ["stubs"], env, logs)
        running.wait_healthy(stubs)
        gateways = [
            running.start(
                name,
                ["gateway", "--instance-id", name, "--storefront-url", stubs.http],
                env,
                logs,
            )
            for name in ("gw-a", "gw-b")
        ]
        for gateway in gateways:
            running.wait_healthy(gateway)
        yield Stack(prefix, stubs, gateways)


def token(user: str) -> str:
    return issue_token(user, SECRET)


async def receive_until(client: Client, done: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Event messages until `done(events)` is true."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while not done(got):
            got += await client.events(1, timeout_s=timeout_s)
    return got


async def test_200_users_over_two_instances_each_get_exactly_their_own_events(
    stack: Stack,
) -> None:
    users = [f"u{n:03d}-{stack.prefix}" for n in range(200)]
    clients: dict[str, Client] = {}
    contexts = []
    try:
        for n, user in enumerate(users):
            gateway = stack.gateways[n % 2]
            ctx = connect(gateway.addr, token(user))
            clients[user] = await ctx.__aenter__()
            contexts.append(ctx)
        for client in clients.values():
            await client.recv_type("snapshot")

        orders: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=stack.stubs.http, timeout=30) as http:

            async def place(user: str) -> None:
                response = await http.post(
                    "/api/orders",
                    json=ORDER,
                    headers={"Authorization": f"Bearer {token(user)}"},
                )
                assert response.status_code == 202, response.text
                orders[user] = response.json()["order_id"]

            for start in range(0, len(users), 20):
                await asyncio.gather(*(place(u) for u in users[start : start + 20]))

        def confirmed(events: list[dict[str, Any]]) -> bool:
            return any(e["event"]["type"] == "order.confirmed" for e in events)

        received = await asyncio.gather(*(receive_until(clients[u], confirmed) for u in users))
        for user, events in zip(users, received, strict=True):
            bodies = [e["event"] for e in events]
            assert {b["user_id"] for b in bodies} == {user}
            assert {b["order_id"] for b in bodies} == {orders[user]}
            assert len({b["event_id"] for b in bodies}) == len(bodies)  # no duplicates
            versions = [b["version"] for b in bodies if b["type"].startswith("order.")]
            assert versions == [1, 2]
            cursors = [tuple(map(int, e["cursor"].split("-"))) for e in events]
            assert cursors == sorted(cursors)
        # Nothing more arrives for anyone (no other user's events, no repeats).
        await asyncio.sleep(1.0)
        for client in clients.values():
            assert await client.silent(0.01)

        # Both instances consumed part of the events and delivered through Redis.
        async with httpx.AsyncClient() as http:
            stats = [(await http.get(g.admin + "/api/stats")).json() for g in stack.gateways]
        assert all(s["events_consumed"] > 0 for s in stats), stats
        assert sum(s["frames_sent"] for s in stats) >= 200 * 6
    finally:
        for ctx in contexts:
            await ctx.__aexit__(None, None, None)


async def test_event_from_an_outside_producer_reaches_the_user(stack: Stack) -> None:
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is installed by `make services` (Debian package kcat)"
    user = f"kcat-{stack.prefix}"
    event = make_event(
        "order.pending", order_id=f"ord-{user}", user_id=user, status="pending", version=1
    )
    async with connect(stack.gateways[1].addr, token(user)) as client:
        await client.recv_type("snapshot")
        line = f"{event.order_id}\t{encode_event(event).decode()}\n"
        subprocess.run(
            [kcat, "-b", KAFKA_BOOTSTRAP, "-t", f"{stack.prefix}orders", "-K", "\t", "-P"],
            input=line.encode(),
            check=True,
            timeout=30,
        )
        (received,) = await client.events(1, timeout_s=30)
        assert received["event"]["event_id"] == event.event_id


async def test_reconnect_to_the_other_instance_resumes_exactly(stack: Stack) -> None:
    user = f"mover-{stack.prefix}"
    a, b = stack.gateways
    headers = {"Authorization": f"Bearer {token(user)}"}
    body = ORDER
    async with httpx.AsyncClient(base_url=a.http, timeout=30) as http:  # through the proxy
        async with connect(a.addr, token(user)) as client:
            await client.recv_type("snapshot")
            first = (await http.post("/api/orders", json=body, headers=headers)).json()["order_id"]
            events = await receive_until(
                client, lambda got: any(e["event"]["type"] == "order.confirmed" for e in got)
            )
            cursor = events[-1]["cursor"]
        # Offline: a second order runs its whole saga.
        second = (await http.post("/api/orders", json=body, headers=headers)).json()["order_id"]
        orders = await http.get("/api/orders", headers=headers)
        for _ in range(100):
            statuses = {o["order_id"]: o["status"] for o in orders.json()["orders"]}
            if statuses.get(second) == "confirmed":
                break
            await asyncio.sleep(0.1)
            orders = await http.get("/api/orders", headers=headers)
        await asyncio.sleep(0.5)  # let the gateway append the last events
    async with connect(b.addr, token(user), cursor=cursor) as client:
        replay: list[dict[str, Any]] = []
        while True:
            message = await client.recv(timeout_s=10)
            if message["type"] == "resumed":
                break
            assert message["type"] == "event", message
            replay.append(message)
        assert {e["event"]["order_id"] for e in replay} == {second}
        assert first != second
        types = [e["event"]["type"] for e in replay]
        assert types.count("order.pending") == 1 and types.count("order.confirmed") == 1
        assert message["replayed"] == len(replay)


async def test_pages_are_served_by_the_gateway_with_the_api_behind_it(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateways[0].http, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "Orderpush" in page.text
        token_answer = await http.post("/api/dev/token", json={"user_id": "pagegoer"})
        assert token_answer.status_code == 200
        listing = await http.get(
            "/api/orders", headers={"Authorization": f"Bearer {token_answer.json()['token']}"}
        )
        assert listing.status_code == 200 and listing.json() == {"orders": []}
        assert json.loads((await http.get("/healthz")).text)["instance_id"] == "gw-a"
