"""Spread keepalive pings (orderpush/ws_keepalive.py) on a real uvicorn with
real `websockets` clients: sockets that connect together get their first
pings spread over an interval, and pings keep working after that."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
import websockets
from starlette.types import Receive, Scope, Send

from orderpush.serve import _ws_protocol
from orderpush.ws_keepalive import FIRST_PING_SPREAD, SpreadPingProtocol
from tests.harness import free_port

PING_INTERVAL_S = 2.0


async def echo_until_closed(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[uvicorn.Server, int]]:
    port = free_port()
    config = uvicorn.Config(
        echo_until_closed,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws=SpreadPingProtocol,
        ws_ping_interval=PING_INTERVAL_S,
        ws_ping_timeout=PING_INTERVAL_S,
    )
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve())
    try:
        async with asyncio.timeout(30):
            while not running.started:
                await asyncio.sleep(0.02)
        yield running, port
    finally:
        running.should_exit = True
        async with asyncio.timeout(30):
            await task


def sockets(running: uvicorn.Server) -> list[SpreadPingProtocol]:
    return [c for c in running.server_state.connections if isinstance(c, SpreadPingProtocol)]


async def test_the_gateway_serves_websockets_sansio_with_spread_pings() -> None:
    assert _ws_protocol("websockets-sansio") is SpreadPingProtocol
    assert _ws_protocol("wsproto") == "wsproto"  # any other choice is uvicorn's own


async def test_sockets_connected_together_get_their_first_pings_spread_and_answered() -> None:
    async with server() as (running, port), contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(60):
            loop = asyncio.get_running_loop()
            started = loop.time()
            clients = await asyncio.gather(
                *(
                    stack.enter_async_context(websockets.connect(f"ws://127.0.0.1:{port}/"))
                    for _ in range(40)
                )
            )
            connected = loop.time()
            protocols = sockets(running)
            assert len(protocols) == 40
            first_pings = [p.ping_timer.when() for p in protocols if p.ping_timer is not None]
            assert len(first_pings) == 40
            low, high = FIRST_PING_SPREAD
            assert min(first_pings) >= started + low * PING_INTERVAL_S
            assert max(first_pings) <= connected + high * PING_INTERVAL_S
            # Spread over the interval, not all at once (uvicorn's own: all
            # within the connect time of the burst).
            assert max(first_pings) - min(first_pings) > 0.3 * PING_INTERVAL_S
            # Every socket is pinged, answers, and stays open.
            await asyncio.sleep((high + 0.5) * PING_INTERVAL_S)
            assert all(p.last_ping_rtt > 0 for p in protocols)
            assert all(p.ping_timer is not None for p in protocols)  # the next one is due
            for client in clients:
                await client.send("still here")
            assert len(sockets(running)) == 40
