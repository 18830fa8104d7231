"""The storefront API as the pages use it (through the gateway's `storefront` client).

The storefront is the backend stubs' HTTP API: in the demo an ASGI app in the
same process, otherwise a remote service. Pages call it on the user's behalf
with the token from their cookie.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class StorefrontError(Exception):
    """The storefront did not give a usable answer; `status_code` is what to tell the browser."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class Storefront:
    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self.client = client

    async def _call(
        self, method: str, path: str, *, token: str | None = None, json: object = None
    ) -> httpx.Response:
        if self.client is None:
            raise StorefrontError(503, "no storefront is configured (ORDERPUSH_STOREFRONT_URL)")
        headers = {"accept": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        try:
            return await self.client.request(method, path, headers=headers, json=json)
        except httpx.HTTPError as exc:
            raise StorefrontError(502, f"storefront unavailable: {type(exc).__name__}") from None

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise StorefrontError(502, "storefront answered something that is not JSON") from None

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code == 401:
            raise StorefrontError(401, "sign in again: the storefront refused the token")
        if response.status_code >= 400:
            raise StorefrontError(502, f"storefront answered {response.status_code}")

    async def dev_token(self, user_id: str) -> str:
        """A token from `POST /api/dev/token` (development mode only)."""
        response = await self._call("POST", "/api/dev/token", json={"user_id": user_id})
        if response.status_code == 404:
            raise StorefrontError(404, "the storefront is not in development mode")
        self._check(response)
        body = self._json(response)
        token = body.get("token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise StorefrontError(502, "storefront answered no token")
        return token

    async def orders(self, token: str) -> list[dict[str, Any]]:
        """The user's orders as `GET /api/orders` lists them (newest first)."""
        response = await self._call("GET", "/api/orders", token=token)
        self._check(response)
        body = self._json(response)
        raw = body.get("orders") if isinstance(body, Mapping) else body
        if not isinstance(raw, list):
            raise StorefrontError(502, "storefront answered no list of orders")
        return [dict(o) for o in raw if isinstance(o, Mapping) and "order_id" in o]

    async def order(self, token: str, order_id: str) -> dict[str, Any] | None:
        """One order with its `timeline`, or None when it is not the user's."""
        response = await self._call("GET", f"/api/orders/{order_id}", token=token)
        if response.status_code == 404:
            return None
        self._check(response)
        body = self._json(response)
        if not isinstance(body, Mapping) or "order_id" not in body:
            raise StorefrontError(502, "storefront answered no order")
        order = dict(body)
        if not isinstance(order.get("timeline"), list):
            order["timeline"] = []
        return order
