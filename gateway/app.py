"""create_app: one gateway instance as a Starlette application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.admin import AdminListener, public_404_routes
from gateway.drain import close_spread
from gateway.endpoint import Conversation
from gateway.hub import Hub
from gateway.logs import redact_tokens_in_server_logs
from gateway.metrics import GatewayMetrics, current
from gateway.presence import open_presence
from gateway.protocol import CloseCode
from gateway.pump import Pump
from gateway.rebuild import ViewRebuilder
from gateway.route_leases import RouteLeases
from gateway.sessions import SessionStore, open_sessions
from gateway.settings import Settings
from gateway.storefront import StorefrontProxy, storefront_client
from orderpush_core.bus import EventBus, open_bus

log = logging.getLogger("orderpush.app")

WS_PATH = "/ws"

#: The public pages, plugged in by the entry package (`orderpush.apps`), given
#: the settings and the storefront client (None: no storefront). The gateway
#: does not import `web`: import-linter's layers contract (pyproject.toml).
PageRoutes = Callable[[Settings, httpx.AsyncClient | None], list[BaseRoute]]
#: The admin listener's pages (the operator page and its static files).
AdminPageRoutes = Callable[[Settings], list[BaseRoute]]


class Startable(Protocol):
    """Something started with the app and stopped with it (the demo's stubs)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Gateway:
    """The parts of one instance, reachable from routes as `app.state.gateway`."""

    def __init__(
        self, settings: Settings, bus: EventBus, store: SessionStore, *, owns_bus: bool = True
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        # A bus handed in by the caller (the demo's, shared with the stubs) is
        # the caller's to start and stop.
        self.owns_bus = owns_bus
        self.metrics = GatewayMetrics()
        self.hub = Hub(self.metrics)
        self.verifier = settings.token_verifier()
        self.pump = Pump(
            bus,
            store,
            self.hub,
            self.metrics,
            # Groups are cluster-wide while topics carry the prefix: prefix both,
            # so two systems (or test runs) on one cluster never share a group.
            group=settings.topic_prefix + settings.consumer_group,
            client_id=settings.instance_id,
            batch_max=settings.batch_max,
        )
        #: The one owner of this instance's route leases (hub + heartbeat).
        self.route_leases = RouteLeases(self.hub, store)
        self.endpoint = Conversation(
            settings, self.verifier, self.hub, store, self.metrics, self.route_leases
        )
        # Sockets per user across the cluster: shared as widely as the sessions.
        self.presence = open_presence(
            settings.sessions_url,
            settings.instance_id,
            key_prefix=settings.session_key_prefix,
            lease_ttl_s=settings.lease_ttl_s,
        )
        self.endpoint.presence = self.presence
        # Redis is a cache: its order views are rebuilt from Kafka when lost.
        self.rebuilder = ViewRebuilder(bus, store)
        self.endpoint.views_ready = self.rebuilder.wait_ready
        self._tasks: list[asyncio.Task[None]] = []
        self._repairs: set[asyncio.Task[None]] = set()
        self.started = False
        self.draining = False

    async def start(self) -> None:
        if self.owns_bus:
            await self.bus.start()
        await self.store.start(self.hub.deliver, self._on_gap)
        await self.pump.start()
        try:
            # A new cluster, or a Redis that came back empty while no gateway
            # ran: whole views before the first snapshot, not during it.
            await self.rebuilder.check()
        except Exception:
            log.warning("rebuilding the order views at start failed; retrying", exc_info=True)
        self._tasks = [
            asyncio.create_task(
                # Well before the leases expire.
                self.route_leases.keep_alive(self.settings.lease_ttl_s / 3),
                name="orderpush-leases",
            ),
            asyncio.create_task(self._sample_lag(), name="orderpush-lag"),
            asyncio.create_task(self.rebuilder.run(), name="orderpush-rebuild"),
        ]
        self.started = True

    async def drain(self) -> None:
        """The graceful half of a stop (SIGTERM), run while the server still
        serves: not ready any more, no new sockets, out of the consumer group
        (its partitions move at once) after handing on the batch in hand,
        then every socket closed with 1012, spread over the drain window.
        The sockets get what is routed to them until their close."""
        if self.draining:
            return
        self.draining = True
        self.endpoint.draining = True
        window_s = self.settings.drain_window_s
        log.info("draining: leaving the consumer group, then closing sockets over %.1fs", window_s)
        await _bounded("consumer", self.pump.drain(STOP_TIMEOUT_S))
        await close_spread(self.hub.connections(), window_s)
        # Let the senders flush and the endpoints drop their leases.
        for _ in range(40):  # at most 2 s
            if not self.hub.connection_count():
                break
            await asyncio.sleep(0.05)
        log.info("drained; %d sockets left", self.hub.connection_count())

    async def stop(self) -> None:
        self.started = False
        # 1012: clients reconnect (to another instance) with their cursor.
        self.hub.close_all(CloseCode.SERVICE_RESTART, "server restarting")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Each part gets a bounded time: a hung broker would otherwise hold
        # the shutdown past an orchestrator's grace period (leaving the group
        # waits for aiokafka's 40 s request timeout).
        await _bounded("consumer", self.pump.stop())
        await _bounded("session store", self.store.stop())
        if self.owns_bus:
            await _bounded("bus", self.bus.stop())

    def _on_gap(self, lost_at_ms: int) -> None:
        """Routes to this instance may have been lost (its subscription or its
        lease dropped): fill every connection from its user's history, from
        the connection's own position, so nothing it lacks stays lost."""
        self.metrics.routing_gaps.inc()
        for conn in self.hub.connections():
            task = asyncio.create_task(self.endpoint.fill(conn))
            self._repairs.add(task)
            task.add_done_callback(self._repairs.discard)

    async def _sample_lag(self) -> None:
        while True:
            self.metrics.consumer_lag.set(await self.pump.lag())
            await asyncio.sleep(2.0)

    def stats(self) -> dict[str, object]:
        m = self.metrics
        store = self.store.stats()
        return {
            "instance_id": self.settings.instance_id,
            "connections": self.hub.connection_count(),
            "users": len(self.hub.user_ids()),
            "events_consumed": current(m.events_consumed),
            "frames_sent": current(m.frames_sent),
            "poison_records": current(m.poison_records),
            "undecodable_batches": current(m.undecodable_batches),
            "stale_dropped": current(m.stale_dropped),
            "slow_client_closes": current(m.slow_closes),
            "consumer_lag": current(m.consumer_lag),
            "push_latency_ms": m.latency_quantiles_ms(),
            "push_latency_buckets": m.latency_histogram(),
            "session_round_trips": store.round_trips,
            "view_rebuilds": self.rebuilder.rebuilds,
            "uptime_s": round(time.time() - m.started_at, 1),
        }


STOP_TIMEOUT_S = 8.0


async def _bounded(what: str, stopping: Awaitable[None]) -> None:
    try:
        await asyncio.wait_for(stopping, STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning("stopping the %s took over %.0fs; going on", what, STOP_TIMEOUT_S)
    except Exception:
        log.exception("stopping the %s failed", what)


def create_app(
    settings: Settings,
    *,
    bus: EventBus | None = None,
    store: SessionStore | None = None,
    storefront: ASGIApp | None = None,
    services: Sequence[Startable] = (),
    pages: PageRoutes | None = None,
    admin_pages: AdminPageRoutes | None = None,
) -> Starlette:
    """A gateway instance. `storefront` mounts the stubs' API in-process (the
    demo); otherwise `settings.storefront_url` is proxied under /api. `pages`
    and `admin_pages` add the browser pages (`orderpush.apps.gateway_app`
    passes web/'s); without them the instance serves /ws and the probes."""
    settings = settings.validated()
    redact_tokens_in_server_logs()
    gateway = Gateway(
        settings,
        bus
        or open_bus(
            settings.bus_url,
            topic_prefix=settings.topic_prefix,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_ms,
            # The pump's member, named by the instance id (stubs: never).
            static_members=settings.kafka_static_members,
        ),
        store
        or open_sessions(
            settings.sessions_url,
            settings.instance_id,
            key_prefix=settings.session_key_prefix,
            history_max=settings.history_max,
            lease_ttl_s=settings.lease_ttl_s,
            history_idle_s=settings.history_idle_s,
        ),
        owns_bus=bus is None,
    )
    link = storefront_client(storefront, settings.storefront_url)

    async def healthz(request: Request) -> Response:
        """Liveness: the process serves HTTP."""
        return JSONResponse({"status": "ok", "instance_id": settings.instance_id})

    async def readyz(request: Request) -> Response:
        """Readiness: started, not draining, and the consumer holds partitions."""
        consumer = gateway.pump.consumer
        assigned = len(consumer.assignment()) if consumer is not None else 0
        ready = gateway.started and not gateway.draining and assigned > 0
        body = {
            "ready": ready,
            "instance_id": settings.instance_id,
            "partitions": assigned,
            "draining": gateway.draining,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    routes: list[BaseRoute] = [
        WebSocketRoute(WS_PATH, gateway.endpoint.handle),  # normally taken by _GatewayApp
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        # /metrics, /api/stats, /operator: the admin listener's, 404 here.
        *public_404_routes(),
    ]
    admin = (
        AdminListener(
            gateway,
            settings.admin_host,
            settings.admin_port,
            pages=admin_pages(settings) if admin_pages is not None else [],
        )
        if settings.admin_port is not None
        else None
    )
    if pages is not None:
        routes += pages(settings, link)
    if storefront is not None:
        routes.append(Mount("", app=storefront))
    elif link is not None:
        routes.append(
            Route(
                "/api/{path:path}",
                StorefrontProxy(
                    link,
                    max_body_bytes=settings.proxy_max_body_bytes,
                    on_limited=lambda limit: gateway.metrics.limited.labels(limit).inc(),
                ).forward,
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            )
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The gateway first (it starts a bus it owns), then the services that
        # share its bus (the demo's stubs); stopped in the reverse order.
        await gateway.start()
        try:
            await gateway.presence.start()
            if admin is not None:
                await admin.start()
            for service in services:
                await service.start()
            yield
        finally:
            if admin is not None:
                await admin.stop()
            for service in reversed(services):
                await service.stop()
            await gateway.stop()
            await _bounded("presence", gateway.presence.stop())
            if link is not None:
                await link.aclose()

    app = _GatewayApp(gateway.endpoint.handle, routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app


class _GatewayApp(Starlette):
    """Starlette, with `/ws` handed straight to the endpoint.

    Every open WebSocket keeps its ASGI call suspended for its whole life.
    Through Starlette's stack (errors and exceptions middleware, router,
    route, session wrapper) that call holds about ten coroutine frames per
    socket, and each connect runs through all of them. Starlette adds nothing
    the endpoint needs for this one path (it closes its sockets itself), so
    `/ws` skips it: less memory per idle socket and less work per connect
    (bench/README.md). Every other request takes the usual way.
    """

    def __init__(self, ws_handler: Callable[[WebSocket], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ws_handler = ws_handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            scope["app"] = self
            await self._ws_handler(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)
