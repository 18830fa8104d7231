"""The whole system in one process on the embedded default (`orderpush demo`).

One in-memory bus carries the saga between the stub services and the
gateway; one in-memory session store holds sessions and replay history;
the storefront API is mounted in the gateway's app, dev mode on.
"""

from __future__ import annotations

from dataclasses import replace

from starlette.applications import Starlette

from backend_stubs.api import storefront_routes
from backend_stubs.stack import StubStack
from gateway.app import create_app
from gateway.bus.memory import MemoryEventBus
from gateway.settings import Settings


def build_demo_app(settings: Settings | None = None) -> Starlette:
    settings = replace(
        settings or Settings(), bus_url="memory://", dev_mode=True, storefront_url=None
    )
    if not settings.sessions_url.startswith("memory://"):
        settings = replace(settings, sessions_url="memory://")
    settings = settings.validated()
    bus = MemoryEventBus(topic_prefix=settings.topic_prefix)
    stack = StubStack(bus)
    storefront = Starlette(
        routes=storefront_routes(
            payment=stack.payment,
            view=stack.view,
            jwt_secret=settings.jwt_secret,
            dev_mode=True,
            token_ttl_s=settings.dev_token_ttl_s,
            verifier=settings.token_verifier(),
            orders_per_minute=settings.orders_per_minute,
            # Counted with the gateway's limits (the demo has one /metrics).
            on_limited=lambda limit: app.state.gateway.metrics.limited.labels(limit).inc(),
        )
    )
    app = create_app(settings, bus=bus, storefront=storefront, services=[stack])
    return app
