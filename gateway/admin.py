"""The admin listener: `/metrics`, `/api/stats` and `/operator` on their own
host and port (ORDERPUSH_ADMIN_HOST / ORDERPUSH_ADMIN_PORT, loopback by
default), as Centrifugo keeps its internal port apart from the public one.

The public port answers 404 for these paths, so what the instance tells an
operator (its figures, user counts, instance id) never reaches a client who
can merely open `/ws`. The listener is a second uvicorn server in the same
process and event loop, started and stopped by the app's lifespan; it does
not touch signal handling (the public server owns that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("orderpush.admin")

#: Paths served only by the admin listener; the public port answers 404.
ADMIN_PATHS = ("/metrics", "/api/stats", "/operator")


class AdminListenerError(RuntimeError):
    """The admin listener could not start; the message names the variable."""


def admin_routes(gateway: Gateway, pages: Sequence[BaseRoute] = ()) -> list[BaseRoute]:
    """The admin listener's routes; `pages` (the operator page and its static
    files) come from the entry package, as the gateway does not import `web`."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        stats = gateway.stats()
        stats["consumer_lag"] = await gateway.pump.lag()
        return JSONResponse(stats)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "instance_id": gateway.settings.instance_id})

    return [
        Route("/metrics", metrics),
        Route("/api/stats", stats),
        Route("/healthz", healthz),
        *pages,
    ]


def public_404_routes() -> list[BaseRoute]:
    """Explicit 404s on the public port, ahead of the `/api` proxy and the
    demo's storefront mount, so neither ever sees these paths."""

    async def not_here(request: Request) -> Response:
        return JSONResponse({"error": "not_found"}, status_code=404)

    return [Route(path, not_here, methods=["GET", "HEAD", "POST"]) for path in ADMIN_PATHS]


def admin_app(gateway: Gateway, pages: Sequence[BaseRoute] = ()) -> Starlette:
    """The admin ASGI app of `gateway` (no lifespan: the public app's starts it)."""
    return Starlette(routes=admin_routes(gateway, pages))


class _SignalFreeServer(uvicorn.Server):
    """uvicorn without its signal handlers: the public server's stay in place."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AdminListener:
    def __init__(
        self, gateway: Gateway, host: str, port: int, *, pages: Sequence[BaseRoute] = ()
    ) -> None:
        self.gateway = gateway
        self.pages = list(pages)
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Bind here, so a port in use stops the start with a message that
        # names the setting (uvicorn would log and sys.exit on its own).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise AdminListenerError(
                f"ORDERPUSH_ADMIN_HOST / ORDERPUSH_ADMIN_PORT: cannot listen on "
                f"{self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        config = uvicorn.Config(
            admin_app(self.gateway, self.pages),
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._server = _SignalFreeServer(config)
        self._task = asyncio.create_task(self._server.serve([sock]), name="orderpush-admin")
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise AdminListenerError("the admin listener stopped at start")
                await asyncio.sleep(0.01)
        log.info(
            "admin listener on http://%s:%d (/metrics, /api/stats, /operator)", self.host, self.port
        )

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, 5.0)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        except Exception:
            log.exception("the admin listener failed")
