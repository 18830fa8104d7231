"""The whole system in one process on the embedded default (`orderpush demo`).

One in-memory bus carries the saga between the stub services and the
gateway; one in-memory session store holds sessions and replay history;
the storefront API is mounted in the gateway's app, dev mode on.
"""

from __future__ import annotations

from dataclasses import replace

from starlette.applications import Starlette

from backend_stubs.stack import StubStack
from gateway.settings import Settings
from orderpush.apps import gateway_app, storefront_app
from orderpush_core.bus.memory import MemoryEventBus


def build_demo_app(settings: Settings | None = None) -> Starlette:
    settings = replace(
        settings or Settings(), bus_url="memory://", dev_mode=True, storefront_url=None
    )
    if not settings.sessions_url.startswith("memory://"):
        settings = replace(settings, sessions_url="memory://")
    settings = settings.validated()
    bus = MemoryEventBus(topic_prefix=settings.topic_prefix)
    stack = StubStack(bus)
    storefront = storefront_app(
        settings,
        stack,
        # Counted with the gateway's limits (the demo has one /metrics).
        on_limited=lambda limit: app.state.gateway.metrics.limited.labels(limit).inc(),
    )
    app = gateway_app(settings, bus=bus, storefront=storefront, services=[stack])
    return app
