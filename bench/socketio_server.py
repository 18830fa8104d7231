"""The python-socketio side of bench/side_by_side.py: the smallest server that
does what Orderpush does for the benchmark, the way python-socketio is meant
to be scaled out.

- Each WebSocket client authenticates with the same HS256 JWT as Orderpush
  (`auth: {"token": ...}` in the Socket.IO connect packet), verified with the
  same PyJWT call, and joins the room named by its `sub` (its user id).
- Messages come in through `socketio.AsyncRedisManager` on Redis pub/sub: any
  process emits to a user's room (the load client publishes the manager's JSON
  "emit" messages itself), and every server delivers to its local sockets.
- It runs under uvicorn like the gateway (same event loop and HTTP parser).

It has no history, no resume and no snapshot: a message emitted while a user
is disconnected is lost. That is the design it is compared with, not a bug of
this script.

    pip install python-socketio
    python bench/socketio_server.py --port 8300 --redis redis://127.0.0.1:6379/0 \
        --channel bench-sio --secret S
"""

from __future__ import annotations

import argparse
from typing import Any

import jwt
import socketio
import uvicorn


def build_app(redis_url: str, channel: str, secret: str) -> Any:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        transports=["websocket"],
        cors_allowed_origins="*",
    )

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> bool:
        token = (auth or {}).get("token")
        if not isinstance(token, str):
            return False
        try:
            claims = jwt.decode(
                token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return False
        await sio.enter_room(sid, str(claims["sub"]))
        return True

    return socketio.ASGIApp(sio)


def main() -> None:
    parser = argparse.ArgumentParser(description="python-socketio + AsyncRedisManager")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--channel", default="socketio")
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    app = build_app(args.redis, args.channel, args.secret)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
