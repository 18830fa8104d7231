"""Placeholder page routes; the real pages replace this module."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.settings import Settings


def page_routes(settings: Settings, storefront: httpx.AsyncClient | None) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return HTMLResponse("<h1>Orderpush</h1>")

    return [Route("/", index)]
