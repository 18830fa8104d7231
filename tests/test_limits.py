"""Limits, each tried as an abuser would, against a real uvicorn server (and
for the cluster-wide one, two real gateway processes on the real Redis):
every breach gets its documented close code or HTTP status, is counted in
`orderpush_limited_total`, and other clients go on being served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin import admin_app
from gateway.presence import PresenceStore
from gateway.presence.memory import MemoryPresence, shared_board
from gateway.presence.redis import RedisPresence
from gateway.protocol import CloseCode
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush.demo import build_demo_app
from orderpush_core.auth import issue_token
from tests.backends import REDIS_URL, SESSION_BACKENDS, unique
from tests.harness import cluster, serve
from tests.wsclient import Client, connect

ORDER = {"items": [{"sku": "SKU-1", "qty": 1}], "payment": {"card": "4242424242424242"}}


def token(user: str) -> str:
    return issue_token(user, DEV_SECRET)


async def limited(app: Starlette, limit: str) -> float:
    """orderpush_limited_total{limit=...} as the admin listener shows it."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin_app(app.state.gateway)), base_url="http://admin"
    ) as admin:
        text = (await admin.get("/metrics")).text
    return _sample(text, limit)


def _sample(metrics_text: str, limit: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f'orderpush_limited_total{{limit="{limit}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@contextlib.asynccontextmanager
async def gateway(**options: Any) -> AsyncIterator[tuple[str, Starlette]]:
    settings = Settings(sessions_url=f"memory://{unique('lim')}", **options)
    app = gateway_app(settings)
    async with serve(app) as addr:
        yield addr, app


async def still_served(addr: str, user: str = "bystander", **kwargs: Any) -> None:
    async with connect(addr, token(user), **kwargs) as client:
        await client.recv_type("snapshot")
        await client.send({"type": "ping"})
        await client.recv_type("pong")


# -- presence (the basis of the per-user socket limit) --------------------------


@contextlib.asynccontextmanager
async def presences(backend: str, ttl_s: float) -> AsyncIterator[list[PresenceStore]]:
    """Two instances' presence stores that share one view (as two gateways do)."""
    if backend == "memory":
        board = shared_board(unique("board"))
        yield [MemoryPresence(board, "A"), MemoryPresence(board, "B")]
        return
    prefix = unique("pres")
    stores = [RedisPresence(REDIS_URL, name, key_prefix=prefix, lease_ttl_s=ttl_s) for name in "AB"]
    for store in stores:
        await store.start()
    try:
        yield list(stores)
    finally:
        for store in stores:
            await store.stop()


@pytest.mark.parametrize("backend", SESSION_BACKENDS)
async def test_presence_counts_sockets_across_instances(backend: str) -> None:
    async with presences(backend, ttl_s=30) as (a, b):
        assert await a.acquire("u", "1", 3)
        assert await b.acquire("u", "2", 3)
        assert await a.acquire("u", "3", 3)
        assert not await b.acquire("u", "4", 3)  # full, whichever instance asks
        assert await a.acquire("u", "3", 3)  # the same socket again is no new place
        assert await a.acquire("other", "1", 3)  # another user has room
        assert await a.count("u") == 3
        await b.release("u", "2")
        assert await b.acquire("u", "4", 3)
        assert await a.count("u") == 3


@pytest.mark.redis
async def test_redis_presence_heals_itself_when_an_instance_dies() -> None:
    prefix = unique("pres")
    # A is never started: it holds sockets but never refreshes their leases,
    # as an instance killed right after admitting them (its refresh loop and
    # clean-up never run).
    a = RedisPresence(REDIS_URL, "A", key_prefix=prefix, lease_ttl_s=1.0)
    b = RedisPresence(REDIS_URL, "B", key_prefix=prefix, lease_ttl_s=1.0)
    await b.start()
    try:
        await _heal(a, b)
    finally:
        async with asyncio.timeout(30):
            await b.stop()
            await a._redis.aclose()


async def _heal(a: RedisPresence, b: RedisPresence) -> None:
    async with asyncio.timeout(60):  # a hang fails here, at the line it hung on
        for n in range(2):
            assert await a.acquire("u", f"a{n}", 3)
        assert await b.acquire("u", "b0", 3)
        assert not await b.acquire("u", "b1", 3)
        for _ in range(5):  # B keeps its own lease alive meanwhile
            await asyncio.sleep(0.4)
            await b.refresh()
        assert await b.count("u") == 1
        assert await b.acquire("u", "b1", 3)
        assert await b.acquire("u", "b2", 3)
        assert not await b.acquire("u", "b3", 3)


# -- sockets per user, one instance ------------------------------------------------


async def test_sockets_per_user_beyond_the_limit_close_4030() -> None:
    async with gateway(max_sockets_per_user=3) as (addr, app):
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                client = await stack.enter_async_context(connect(addr, token("greedy")))
                await client.recv_type("snapshot")
            async with connect(addr, token("greedy"), handshake=False) as fourth:
                assert await fourth.closed_with() == CloseCode.TOO_MANY_SOCKETS
                assert fourth.ws.close_reason == "at most 3 sockets per user"
            await still_served(addr)
        # Closed sockets free their places.
        async with connect(addr, token("greedy")) as again:
            await again.recv_type("snapshot")
        assert await limited(app, "user_sockets") == 1


# -- handshakes per client address -----------------------------------------------


async def test_handshakes_per_address_beyond_the_rate_close_4029() -> None:
    async with gateway(handshakes_per_s=0.5, handshake_burst=3, limit_exempt_addresses=()) as (
        addr,
        app,
    ):
        for _ in range(3):
            await still_served(addr, "flooder")
        async with connect(addr, None, handshake=False) as refused:
            assert await refused.closed_with() == CloseCode.RATE_LIMITED
            assert refused.ws.close_reason == "too many handshakes from your address"
        # Another address is still served (127.0.0.0/8 is all loopback).
        await still_served(addr, local_addr=("127.0.0.2", 0))
        assert await limited(app, "handshake_rate") == 1


async def test_exempt_addresses_are_not_rate_limited() -> None:
    async with gateway(handshakes_per_s=0.5, handshake_burst=1) as (addr, app):
        for _ in range(5):  # 127.0.0.1 is exempt by default
            await still_served(addr)
        assert await limited(app, "handshake_rate") == 0


# -- sockets waiting to authenticate -----------------------------------------------


async def test_unauthenticated_sockets_beyond_the_limit_close_1013() -> None:
    async with gateway(max_unauthenticated=3, auth_timeout_s=30) as (addr, app):
        async with contextlib.AsyncExitStack() as stack:
            silent = [
                await stack.enter_async_context(connect(addr, None, handshake=False))
                for _ in range(3)
            ]
            await asyncio.sleep(0.2)  # all three are waiting for their auth now
            async with connect(addr, None, handshake=False) as fourth:
                assert await fourth.closed_with() == CloseCode.TRY_AGAIN_LATER
                assert fourth.ws.close_reason == "too many sockets authenticating"
            # One of the waiting ones authenticates: a place is free again.
            await silent[0].send({"type": "auth", "token": token("late")})
            await silent[0].recv_type("welcome")
            await still_served(addr)
        assert await limited(app, "unauthenticated") == 1


# -- resumes per connection ------------------------------------------------------


async def test_resumes_beyond_the_rate_close_4029() -> None:
    async with gateway(resumes_per_minute=3) as (addr, app):
        async with connect(addr, token("replayer"), cursor="0-0") as client:
            await client.recv_type("resumed")  # the first auth's cursor is free
            for _ in range(3):
                await client.send({"type": "resume", "cursor": "0-0"})
                await client.recv_type("resumed")
            await client.send({"type": "resume", "cursor": "0-0"})
            assert await client.closed_with() == CloseCode.RATE_LIMITED
            assert client.ws.close_reason == "too many resumes"
        async with connect(addr, token("replayer2")) as other:
            await other.recv_type("snapshot")
            # A later auth with a cursor is a resume too.
            for _ in range(3):
                await other.send({"type": "auth", "token": token("replayer2"), "cursor": "0-0"})
                await other.recv_type("resumed")
            await other.send({"type": "auth", "token": token("replayer2"), "cursor": "0-0"})
            assert await other.closed_with() == CloseCode.RATE_LIMITED
        await still_served(addr)
        assert await limited(app, "resume_rate") == 2


# -- orders per user per minute (storefront) ----------------------------------------


async def test_orders_per_user_beyond_the_rate_answer_429() -> None:
    settings = Settings(sessions_url=f"memory://{unique('lim')}", orders_per_minute=3)
    app = build_demo_app(settings)
    async with serve(app) as addr, httpx.AsyncClient(base_url=f"http://{addr}") as http:

        async def place(user: str) -> httpx.Response:
            auth = {"Authorization": f"Bearer {token(user)}"}
            return await http.post("/api/orders", json=ORDER, headers=auth)

        for _ in range(3):
            assert (await place("shopaholic")).status_code == 202
        refused = await place("shopaholic")
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "rate_limited" and body["retry_after_s"] >= 1
        assert int(refused.headers["retry-after"]) == body["retry_after_s"]
        assert (await place("someone-else")).status_code == 202
        assert await limited(app, "order_rate") == 1


# -- the /api proxy's body limit -------------------------------------------------


async def test_proxy_refuses_a_body_over_the_limit_with_413() -> None:
    seen: list[int] = []

    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    upstream = Starlette(routes=[Route("/api/{path:path}", echo, methods=["POST"])])
    async with (
        serve(upstream) as upstream_addr,
        gateway(storefront_url=f"http://{upstream_addr}", proxy_max_body_bytes=1024) as (addr, app),
    ):
        async with httpx.AsyncClient(base_url=f"http://{addr}") as http:
            ok = await http.post("/api/orders", content=b"x" * 1024)
            assert ok.status_code == 200 and ok.json() == {"bytes": 1024}
            big = await http.post("/api/orders", content=b"x" * 2048)
            assert big.status_code == 413
            assert big.json() == {"error": "body_too_large", "max_bytes": 1024}

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length
                for _ in range(3):
                    yield b"y" * 512

            streamed = await http.post("/api/orders", content=chunks())
            assert streamed.status_code == 413
        await still_served(addr)
        assert seen == [1024]  # nothing over the limit reached the storefront
        assert await limited(app, "proxy_body") == 2


# -- cluster-wide: two real gateway processes on Redis -------------------------------


async def _connect_code(url: str, user: str) -> tuple[int | None, Client | None, Any]:
    """Connect and authenticate; (None, client, ctx) when admitted, else the close code."""
    ctx = websockets.connect(url, open_timeout=5)
    ws = await ctx.__aenter__()
    client = Client(ws)
    await client.send({"type": "auth", "token": token(user)})
    try:
        first: dict[str, Any] | None = await client.recv(timeout_s=10)
    except websockets.ConnectionClosed:
        first = None
    if first is None:
        code = ws.close_code
        await ctx.__aexit__(None, None, None)
        return code, None, None
    assert first["type"] == "welcome", first
    return None, client, ctx


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.25)


@pytest.mark.redis
async def test_sockets_per_user_are_limited_across_two_gateway_processes(
    tmp_path: Path,
) -> None:
    prefix = unique("lim")
    env = {
        "ORDERPUSH_JWT_SECRET": DEV_SECRET,
        "ORDERPUSH_BUS": "memory://",
        "ORDERPUSH_SESSIONS": REDIS_URL,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_MAX_SOCKETS_PER_USER": "3",
        "ORDERPUSH_LEASE_TTL_S": "2",
    }
    user = f"greedy-{prefix}"
    opened: list[Any] = []
    with cluster() as running:
        gw_a, gw_b = (
            running.start(n, ["gateway", "--instance-id", n], env, tmp_path) for n in "ab"
        )
        for process in (gw_a, gw_b):
            running.wait_healthy(process)
        try:
            for url in (gw_a.ws, gw_a.ws, gw_b.ws):
                code, _, ctx = await _connect_code(url, user)
                assert code is None
                opened.append((url, ctx))
            for url in (gw_a.ws, gw_b.ws):  # the 4th, on either instance
                code, _, _ = await _connect_code(url, user)
                assert code == CloseCode.TOO_MANY_SOCKETS
            for url in (gw_a.ws, gw_b.ws):  # other users are served on both
                code, _, ctx = await _connect_code(url, f"bystander-{prefix}")
                assert code is None
                await ctx.__aexit__(None, None, None)
            async with httpx.AsyncClient(trust_env=False) as http:
                metrics = [(await http.get(g.admin + "/metrics")).text for g in (gw_a, gw_b)]
            assert [_sample(m, "user_sockets") for m in metrics] == [1.0, 1.0]

            # Instance A dies (SIGKILL: no clean-up). Its two sockets stop
            # counting once their leases run out, with nobody cleaning up.
            os.kill(gw_a.popen.pid, signal.SIGKILL)
            gw_a.popen.wait(10)
            opened = [(url, ctx) for url, ctx in opened if url == gw_b.ws]

            async def room_again() -> bool:
                code, _, ctx = await _connect_code(gw_b.ws, user)
                if code is None:
                    opened.append((gw_b.ws, ctx))
                return code is None

            await until(room_again, timeout_s=20)
            code, _, ctx = await _connect_code(gw_b.ws, user)
            assert code is None  # 3 of 3 now: 1 old + 2 new on B
            opened.append((gw_b.ws, ctx))
            code, _, _ = await _connect_code(gw_b.ws, user)
            assert code == CloseCode.TOO_MANY_SOCKETS
        finally:
            for _, ctx in opened:
                with contextlib.suppress(Exception):
                    await ctx.__aexit__(None, None, None)
