"""The apps, assembled: the gateway with its pages, the stubs' storefront.

The one place where the gateway meets `web/` (its pages go in through
`create_app`'s `pages` and `admin_pages`) and where the settings become the
stubs' arguments (`backend_stubs` does not import the gateway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.types import ASGIApp

from backend_stubs.api import create_app as create_storefront_app
from backend_stubs.stack import StubStack
from gateway.app import Startable, create_app
from gateway.sessions import SessionStore
from gateway.settings import Settings
from orderpush_core.bus import EventBus
from web.pages import operator_routes, page_routes


def gateway_app(
    settings: Settings,
    *,
    bus: EventBus | None = None,
    store: SessionStore | None = None,
    storefront: ASGIApp | None = None,
    services: Sequence[Startable] = (),
) -> Starlette:
    """A gateway instance with the browser pages and the operator page."""
    return create_app(
        settings,
        bus=bus,
        store=store,
        storefront=storefront,
        services=services,
        pages=page_routes,
        admin_pages=operator_routes,
    )


def storefront_app(
    settings: Settings,
    stack: StubStack,
    *,
    bus: EventBus | None = None,
    on_limited: Callable[[str], None] | None = None,
) -> Starlette:
    """The storefront API over `stack`, configured by `settings`: the one
    assembly of the stubs' app, standalone (`orderpush stubs`: its lifespan
    starts `bus` and `stack`, it counts its refusals on /metrics) or mounted
    in the demo's gateway (a mounted app's lifespan does not run: the gateway
    starts the stack as a service; refusals go to `on_limited`)."""
    return create_storefront_app(
        stack,
        jwt_secret=settings.jwt_secret,
        dev_mode=settings.dev_mode,
        token_ttl_s=settings.dev_token_ttl_s,
        verifier=settings.token_verifier(),
        orders_per_minute=settings.orders_per_minute,
        on_limited=on_limited,
        bus=bus,
    )
