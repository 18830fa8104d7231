"""Helpers for the stub and storefront tests (no tests here).

A "shop" is a bus with a unique topic prefix, a StubStack on it and an
httpx client talking to the storefront routes in-process (ASGITransport).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette

from backend_stubs.api import storefront_routes
from backend_stubs.stack import ALL_SERVICES, StubStack
from orderpush_core.auth import issue_token
from orderpush_core.bus import EventBus, Record, open_bus
from tests.backends import bus_url, unique

SECRET = "test-secret-for-the-stubs-0123456789abcdef"
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TIMEOUT_S = 60.0

T = TypeVar("T")


def auth(user_id: str, *, ttl_s: float = 600.0, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user_id, secret, ttl_s=ttl_s)}"}


def order_body(*skus: str, card: str = GOOD_CARD, qty: int = 1) -> dict[str, Any]:
    return {
        "items": [{"sku": s, "qty": qty} for s in skus or ("SKU-1",)],
        "payment": {"card": card},
    }


@dataclass
class Shop:
    backend: str
    bus: EventBus
    stacks: list[StubStack]
    client: httpx.AsyncClient
    prefix: str
    extra: list[StubStack] = field(default_factory=list)

    @property
    def stack(self) -> StubStack:
        return self.stacks[0]

    async def add_stack(self, only: Collection[str], data_dir: Path | None = None) -> StubStack:
        stack = StubStack(self.bus, only=only, data_dir=data_dir, poll_timeout_ms=200)
        await stack.start()
        self.extra.append(stack)
        return stack

    async def place(self, user_id: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post(
            "/api/orders", json=body, headers={**auth(user_id), **headers}
        )

    async def order(self, user_id: str, order_id: str) -> dict[str, Any] | None:
        response = await self.client.get(f"/api/orders/{order_id}", headers=auth(user_id))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def wait_order(
        self,
        user_id: str,
        order_id: str,
        until: Callable[[dict[str, Any]], bool],
        timeout_s: float = TIMEOUT_S,
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            order = await self.order(user_id, order_id)
            return order if order is not None and until(order) else None

        try:
            return await eventually(check, timeout_s)
        except TimeoutError:
            raise AssertionError(
                f"order {order_id} never matched; last seen: {await self.order(user_id, order_id)}"
            ) from None


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout_s: float = TIMEOUT_S, interval_s: float = 0.05
) -> T:
    """Poll `check` until it returns something, or raise TimeoutError."""

    async def loop() -> T:
        while True:
            result = await check()
            if result is not None:
                return result
            await asyncio.sleep(interval_s)

    return await asyncio.wait_for(loop(), timeout_s)


def types(order: dict[str, Any]) -> list[str]:
    return [entry["type"] for entry in order["timeline"]]


def has_types(*wanted: str) -> Callable[[dict[str, Any]], bool]:
    return lambda order: set(wanted) <= set(types(order))


@asynccontextmanager
async def open_shop(
    backend: str,
    *,
    only: Collection[str] = ALL_SERVICES,
    data_dir: Path | None = None,
    dev_mode: bool = True,
    url: str | None = None,
) -> AsyncIterator[Shop]:
    """`url` names another bus than the backend's usual one (a private broker)."""
    prefix = unique("t")
    bus = open_bus(url or bus_url(backend), topic_prefix=prefix)
    await bus.start()
    stack = StubStack(bus, only=only, data_dir=data_dir, poll_timeout_ms=200)
    shop: Shop | None = None
    try:
        await stack.start()
        app = Starlette(
            routes=storefront_routes(
                payment=stack.payment, view=stack.view, jwt_secret=SECRET, dev_mode=dev_mode
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            shop = Shop(backend, bus, [stack], client, prefix)
            yield shop
    finally:
        for extra in shop.extra if shop else []:
            await extra.stop()
        await stack.stop()
        await bus.stop()


async def read_topic(
    bus: EventBus, topic: str, until: Callable[[list[Record]], bool], timeout_s: float = TIMEOUT_S
) -> list[Record]:
    """Everything on `topic` (a fresh group) once `until` holds for it."""
    consumer = await bus.consumer([topic], unique("reader"))
    got: list[Record] = []
    try:

        async def loop() -> list[Record]:
            while not until(got):
                got.extend(await consumer.getmany(timeout_ms=200))
            return got

        return await asyncio.wait_for(loop(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"{topic} never matched; got {[r.value for r in got]}") from None
    finally:
        await consumer.stop()


def decoded(records: list[Record]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for record in records:
        try:
            value = json.loads(record.value)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
