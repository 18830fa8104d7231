"""Run `demo`, `gateway` or `stubs` under uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway.settings import ConfigError, Settings

log = logging.getLogger("orderpush.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn, with the app's drain run on the first SIGTERM or SIGINT
    before uvicorn's own shutdown.

    uvicorn's shutdown closes every WebSocket (1012) before the app's
    lifespan shutdown runs, so a drain in the lifespan would find no socket
    left to spread. Here the first signal starts `drain` while everything
    still serves; uvicorn's shutdown follows when it is done. A second
    signal stops at once, as plain uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._draining is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        # Re-raised by uvicorn once it is done, so the exit status still
        # says which signal ended the process.
        self._captured_signals.append(sig)
        log.info("%s: draining before shutdown", signal.Signals(sig).name)
        # A signal handler runs between two bytecodes of the loop's thread:
        # hand the work to the loop rather than touch it from here.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.create_task(self._drain_then_exit(), name="orderpush-drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        except Exception:
            log.exception("draining failed; shutting down anyway")
        finally:
            self.should_exit = True


def stubs_app(
    settings: Settings, only: str | None, data_dir: str | None, instance_id: str | None = None
) -> Starlette:
    """The backend services and the storefront API (`orderpush stubs`).
    `instance_id` (else the one kept in `data_dir`) names the process in its
    services' transactional ids, so a restart fences what it left behind."""
    from backend_stubs.stack import ALL_SERVICES, StubStack, stable_instance_id
    from orderpush.apps import storefront_app
    from orderpush_core.bus import open_bus

    selected = ALL_SERVICES if not only else tuple(s.strip() for s in only.split(",") if s.strip())
    bus = open_bus(
        settings.bus_url,
        topic_prefix=settings.topic_prefix,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_ms,
    )
    try:
        directory = Path(data_dir) if data_dir else None
        stack = StubStack(
            bus,
            data_dir=directory,
            only=selected,
            instance_id=stable_instance_id(directory, instance_id),
        )
    except ValueError as exc:
        raise ConfigError(f"--only: {exc}") from None

    return storefront_app(settings, stack, bus=bus)


def _ws_protocol(name: str) -> str | type[asyncio.Protocol]:
    """uvicorn's WebSocket implementation by name; websockets-sansio (the
    default) with its keepalive pings spread (orderpush/ws_keepalive.py)."""
    if name == "websockets-sansio":
        from orderpush.ws_keepalive import SpreadPingProtocol

        return SpreadPingProtocol
    return name


def serve_command(
    args: argparse.Namespace, settings: Settings, *, sockets: list[socket.socket] | None = None
) -> int:
    """Serve until stopped; on `sockets` (already bound: `--workers`) if given."""
    if args.command == "demo":
        from orderpush.demo import build_demo_app

        app = build_demo_app(settings)
        print(f"Orderpush demo: open http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
        if settings.admin_port is not None:
            admin = f"http://{settings.admin_host}:{settings.admin_port}"
            print(f"Operator page (admin listener): {admin}/operator", flush=True)
    elif args.command == "gateway":
        from orderpush.apps import gateway_app

        app = gateway_app(settings)
    else:
        explicit_id = args.instance_id or os.environ.get("ORDERPUSH_INSTANCE_ID") or None
        app = stubs_app(settings, args.only, args.data_dir, explicit_id)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        ws_max_size=settings.max_message_bytes,
        lifespan="on",
        # uvloop and httptools (uvicorn[standard]) unless asked otherwise: see
        # bench/README.md for what each buys.
        loop=getattr(args, "loop", "uvloop"),
        http=getattr(args, "http", "httptools"),
        ws=_ws_protocol(getattr(args, "ws", "websockets-sansio")),
        # A browser offers permessage-deflate; accepted, it keeps a zlib
        # compressor and decompressor per socket (RSS per idle socket 73 KiB
        # instead of 31 in bench/side_by_side.py) for frames of a few hundred
        # bytes. Off unless asked for.
        ws_per_message_deflate=getattr(args, "ws_deflate", False),
    )
    gateway = getattr(app.state, "gateway", None)
    # Everything imported and built so far lives as long as the process: keep
    # it out of the cyclic collector's full passes, which otherwise rescan it
    # every time (with 5,000 idle sockets a full pass stops the loop for
    # hundreds of ms; this takes ~137k of its ~530k objects out of it).
    gc.collect()
    gc.freeze()
    if gateway is None:
        uvicorn.Server(config).run(sockets=sockets)
    else:
        DrainingServer(config, gateway.drain).run(sockets=sockets)
    return 0
