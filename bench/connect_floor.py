"""The floor under "5,000 clients connected in": uvicorn alone, no gateway.

What it does: serves a bare ASGI app under uvicorn with the gateway's
settings (uvloop, httptools, websockets-sansio, no deflate, `gc.freeze()`
before serving), pinned to one core as in bench/side_by_side.py. The app
speaks just enough of orderpush.v1 for the Go load client: it accepts the
subprotocol, reads the `auth` message, sends a `welcome` and an empty
`snapshot`, then holds the socket. No token check, no Redis, no hub. The
load client connects N users (200 handshakes in flight) on the other core.
It prints the connect time and the server's CPU seconds for the connects:
what any gateway on this uvicorn stack pays per socket before doing any
work of its own.

    python bench/connect_floor.py [--users 5000 --nice -10]

It prints figures; it never passes or fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.side_by_side import Server, build_loadclient, client_argv, priority, run_client
from tests.harness import free_port


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": "orderpush.v1"})
    await receive()  # the auth message, not checked
    await send({"type": "websocket.send", "text": '{"type":"welcome"}'})
    await send({"type": "websocket.send", "text": '{"type":"snapshot","orders":[],"cursor":"0-0"}'})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def serve(port: int) -> None:
    import uvicorn

    gc.collect()
    gc.freeze()
    uvicorn.run(
        bare_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="on",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1")
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    args.compression = "disabled"
    args.loadclient = build_loadclient()
    port = free_port()
    argv = [*priority(args), "taskset", "-c", args.server_core, sys.executable]
    argv += [str(Path(__file__).resolve()), "--serve", str(port)]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(
            "orderpush", port, argv, {}, Path(tmp) / "floor.log", kafka_topic="floor-unused"
        )
        server.start()
        try:
            server.wait_listening()
            time.sleep(1.0)
            client = client_argv(args, server, args.users, "idle")
            client += ["-hold-s", "0", "-idle-rate", "1", "-idle-s", "0.1", "-drain-s", "0.1"]
            client += ["-connect-concurrency", str(args.connect_concurrency)]
            cpu_before_s = server.cpu_s()
            rss_before_kib = server.rss_kib()
            result = run_client(client, timeout_s=600)
            figures = {
                "users": args.users,
                "connect_s": result.get("connect_s"),
                "connect_failed": result.get("connect_failed"),
                # With the idle second of traffic and the drain: a bit more than the connects.
                "server_cpu_s": round(server.cpu_s() - cpu_before_s, 2),
                "rss_per_socket_kib": round((server.rss_kib() - rss_before_kib) / args.users, 1),
            }
        finally:
            server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
