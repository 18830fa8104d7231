"""How the gateway reaches the storefront API of the backend stubs.

In the demo the storefront is an ASGI app in the same process; in a
distributed deployment it is another process at ORDERPUSH_STOREFRONT_URL and
the gateway proxies `/api/*` to it, so pages and the API share an origin.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from orderpush_core.limits import PROXY_BODY

# Headers worth passing on; hop-by-hop ones and cookies stay here.
FORWARDED_HEADERS = ("authorization", "content-type", "idempotency-key", "traceparent", "accept")
RETURNED_HEADERS = ("idempotent-replayed", "www-authenticate", "retry-after", "location")


def storefront_client(app: ASGIApp | None, url: str | None) -> httpx.AsyncClient | None:
    """An HTTP client for the storefront, in-process or remote (None: neither)."""
    if app is not None:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://storefront"
        )
    if url is not None:
        return httpx.AsyncClient(base_url=url, timeout=10.0)
    return None


class StorefrontProxy:
    """`/api/...` forwarded to the remote storefront (distributed mode)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        max_body_bytes: int = 64 * 1024,
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes
        self.on_limited = on_limited

    async def _body(self, request: Request) -> bytes | None:
        """The request body, read up to `max_body_bytes`; None past that (the
        rest is never read: a huge body costs the gateway nothing)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return None
        return bytes(body)

    async def forward(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        body = await self._body(request)
        if body is None:
            if self.on_limited is not None:
                self.on_limited(PROXY_BODY)
            return JSONResponse(
                {"error": "body_too_large", "max_bytes": self.max_body_bytes},
                status_code=413,
                headers={"Connection": "close"},
            )
        try:
            upstream = await self.client.request(
                request.method,
                request.url.path,
                params=str(request.query_params),
                content=body,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            return JSONResponse(
                {"error": "storefront_unavailable", "message": str(exc)}, status_code=502
            )
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
            headers={k: v for k, v in upstream.headers.items() if k.lower() in RETURNED_HEADERS},
        )
