"""Run `demo`, `gateway` or `stubs` under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.settings import ConfigError, Settings


def stubs_app(settings: Settings, only: str | None, data_dir: str | None) -> Starlette:
    """The backend services and the storefront API (`orderpush stubs`)."""
    from backend_stubs.api import storefront_routes
    from backend_stubs.stack import ALL_SERVICES, StubStack
    from gateway.bus import open_bus

    selected = ALL_SERVICES if not only else tuple(s.strip() for s in only.split(",") if s.strip())
    bus = open_bus(settings.bus_url, topic_prefix=settings.topic_prefix)
    try:
        stack = StubStack(bus, data_dir=Path(data_dir) if data_dir else None, only=selected)
    except ValueError as exc:
        raise ConfigError(f"--only: {exc}") from None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bus.start()
        await stack.start()
        try:
            yield
        finally:
            await stack.stop()
            await bus.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "services": sorted(selected)})

    routes = storefront_routes(
        payment=stack.payment,
        view=stack.view,
        jwt_secret=settings.jwt_secret,
        dev_mode=settings.dev_mode,
        token_ttl_s=settings.dev_token_ttl_s,
        verifier=settings.token_verifier(),
    )
    return Starlette(routes=[Route("/healthz", healthz), *routes], lifespan=lifespan)


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        from gateway.demo import build_demo_app

        app = build_demo_app(settings)
        print(f"Orderpush demo: open http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    elif args.command == "gateway":
        from gateway.app import create_app

        app = create_app(settings)
    else:
        app = stubs_app(settings, args.only, args.data_dir)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        ws_max_size=settings.max_message_bytes,
        lifespan="on",
    )
    return 0
