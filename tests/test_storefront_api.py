"""The storefront HTTP API: authentication, validation, ownership, dev tokens.

These are about the HTTP layer, so they run on the memory bus only; the
saga behind it is tested on every backend in test_stubs_saga.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backend_stubs.api import create_app
from backend_stubs.stack import StubStack
from orderpush_core.auth import issue_token
from orderpush_core.bus import open_bus
from tests.stubs_support import (
    DECLINED_CARD,
    GOOD_CARD,
    SECRET,
    Shop,
    auth,
    open_shop,
)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async with open_shop("memory") as shop:
        yield shop


@pytest.fixture
async def prod_shop() -> AsyncIterator[Shop]:
    async with open_shop("memory", dev_mode=False) as shop:
        yield shop


def body(*items: Any, card: Any = GOOD_CARD) -> dict[str, Any]:
    return {"items": list(items), "payment": {"card": card}}


# -- authentication ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {issue_token('alice', 'another-secret-0123456789abcdefgh')}"},
        {"Authorization": f"Bearer {issue_token('alice', SECRET, ttl_s=-10)}"},
    ],
    ids=["none", "empty", "basic", "garbage", "wrong-secret", "expired"],
)
async def test_every_route_wants_a_valid_token(shop: Shop, headers: dict[str, str]) -> None:
    for method, path in [
        ("POST", "/api/orders"),
        ("GET", "/api/orders"),
        ("GET", "/api/orders/ord_123"),
    ]:
        response = await shop.client.request(
            method, path, headers=headers, json=body({"sku": "A", "qty": 1})
        )
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


# -- validation --------------------------------------------------------------


async def test_422_names_each_bad_field(shop: Shop) -> None:
    response = await shop.place(
        "alice",
        body(
            {"sku": "A", "qty": 0},
            {"sku": "", "qty": 100},
            {"qty": 1.5},
            "SKU-4",
            {"sku": "OK", "qty": True},
            card="4242-4242",
        ),
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_body",
        "fields": {
            "items[0].qty": "must be between 1 and 99",
            "items[1].sku": "must be a non-empty string",
            "items[1].qty": "must be between 1 and 99",
            "items[2].sku": "must be a non-empty string",
            "items[2].qty": "must be an integer",
            "items[3]": "must be an object with sku and qty",
            "items[4].qty": "must be an integer",
            "payment.card": "must be a string of 12 to 19 digits",
        },
    }


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"items": "is required", "payment": "is required"}),
        (
            {"items": [], "payment": {}},
            {"items": "must be a non-empty list", "payment.card": "is required"},
        ),
        (
            {"items": {"sku": "A"}, "payment": "visa"},
            {"items": "must be a non-empty list", "payment": "must be an object with card"},
        ),
        (
            body({"sku": "A", "qty": 1}, card=4242424242424242),
            {"payment.card": "must be a string of 12 to 19 digits"},
        ),
        (
            body({"sku": "A", "qty": 1}, card="12345678901"),
            {"payment.card": "must be a string of 12 to 19 digits"},
        ),
        (
            body({"sku": "A", "qty": 1}, card="1" * 20),
            {"payment.card": "must be a string of 12 to 19 digits"},
        ),
        ([1, 2], {"body": "must be a JSON object"}),
    ],
)
async def test_422_for_malformed_bodies(shop: Shop, payload: Any, fields: dict[str, str]) -> None:
    response = await shop.client.post("/api/orders", json=payload, headers=auth("alice"))
    assert response.status_code == 422
    assert response.json() == {"error": "invalid_body", "fields": fields}


async def test_422_for_a_body_that_is_not_json(shop: Shop) -> None:
    response = await shop.client.post(
        "/api/orders",
        content=b"{items:",
        headers={**auth("alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["fields"] == {"body": "must be valid JSON"}


async def test_boundaries_of_a_valid_body_are_accepted(shop: Shop) -> None:
    response = await shop.place(
        "alice",
        {**body({"sku": "A", "qty": 1}, {"sku": "B", "qty": 99}, card="1" * 12), "note": "x"},
    )
    assert response.status_code == 202


async def test_413_for_a_huge_body(shop: Shop) -> None:
    response = await shop.client.post("/api/orders", content=b" " * 70_000, headers=auth("alice"))
    assert response.status_code == 413


# -- ownership ---------------------------------------------------------------


async def test_another_users_order_is_404(shop: Shop) -> None:
    response = await shop.place("alice", body({"sku": "A", "qty": 1}))
    order_id = response.json()["order_id"]
    await shop.wait_order("alice", order_id, lambda o: o["status"] == "confirmed")

    other = await shop.client.get(f"/api/orders/{order_id}", headers=auth("mallory"))
    assert other.status_code == 404
    assert other.json() == {"error": "not_found"}
    unknown = await shop.client.get("/api/orders/ord_nope", headers=auth("alice"))
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found"}
    mine = (await shop.client.get("/api/orders", headers=auth("mallory"))).json()
    assert mine == {"orders": []}


async def test_orders_are_listed_newest_first(shop: Shop) -> None:
    ids = []
    for sku in ("A", "B", "C"):
        response = await shop.place("olga", body({"sku": sku, "qty": 1}))
        ids.append(response.json()["order_id"])
        await shop.wait_order("olga", ids[-1], lambda o: o["status"] == "confirmed")
        await asyncio.sleep(0.01)  # distinct created_at milliseconds
    listed = (await shop.client.get("/api/orders", headers=auth("olga"))).json()["orders"]
    assert [o["order_id"] for o in listed] == ids[::-1]
    assert all(o["items"] and o["created_at"] <= o["updated_at"] for o in listed)


# -- idempotency -------------------------------------------------------------


async def test_idempotency_key_replays_the_first_answer_without_a_second_order(
    shop: Shop,
) -> None:
    key = {"Idempotency-Key": "retry-me"}
    first = await shop.place("alice", body({"sku": "A", "qty": 1}), **key)
    retried = await asyncio.gather(
        *(shop.place("alice", body({"sku": "A", "qty": 1}), **key) for _ in range(5))
    )
    assert first.status_code == 202
    assert {(r.status_code, r.json()["order_id"]) for r in retried} == {
        (202, first.json()["order_id"])
    }
    await shop.wait_order("alice", first.json()["order_id"], lambda o: o["status"] == "confirmed")
    listed = (await shop.client.get("/api/orders", headers=auth("alice"))).json()["orders"]
    assert len(listed) == 1


async def test_concurrent_first_requests_with_one_key_create_one_order(shop: Shop) -> None:
    key = {"Idempotency-Key": "race"}
    answers = await asyncio.gather(
        *(shop.place("alice", body({"sku": "A", "qty": 1}), **key) for _ in range(5))
    )
    assert len({a.json()["order_id"] for a in answers}) == 1


async def test_a_declined_answer_is_replayed_too(shop: Shop) -> None:
    key = {"Idempotency-Key": "declined"}
    first = await shop.place("alice", body({"sku": "A", "qty": 1}, card=DECLINED_CARD), **key)
    again = await shop.place("alice", body({"sku": "A", "qty": 1}, card=DECLINED_CARD), **key)
    assert first.status_code == again.status_code == 402
    assert first.json() == again.json()


async def test_keys_are_per_user_and_per_body(shop: Shop) -> None:
    key = {"Idempotency-Key": "shared"}
    alice = await shop.place("alice", body({"sku": "A", "qty": 1}), **key)
    bob = await shop.place("bob", body({"sku": "A", "qty": 1}), **key)
    assert alice.json()["order_id"] != bob.json()["order_id"]
    # The same key with another body is a client bug, not a retry.
    other = await shop.place("alice", body({"sku": "B", "qty": 1}), **key)
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_key_reused"
    fresh = await shop.place("alice", body({"sku": "A", "qty": 1}), **{"Idempotency-Key": "new"})
    assert fresh.json()["order_id"] != alice.json()["order_id"]


async def test_a_bad_idempotency_key_is_422(shop: Shop) -> None:
    response = await shop.place(
        "alice", body({"sku": "A", "qty": 1}), **{"Idempotency-Key": "a" * 256}
    )
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["fields"]


# -- dev tokens --------------------------------------------------------------


async def test_dev_token_works_in_dev_mode(shop: Shop) -> None:
    response = await shop.client.post("/api/dev/token", json={"user_id": "alice.b-2_c"})
    assert response.status_code == 200
    token = response.json()["token"]
    listed = await shop.client.get("/api/orders", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200


@pytest.mark.parametrize(
    "payload",
    [{}, {"user_id": ""}, {"user_id": "a" * 65}, {"user_id": "al ice"}, {"user_id": 7}, "alice"],
)
async def test_dev_token_validates_the_user_id(shop: Shop, payload: Any) -> None:
    response = await shop.client.post("/api/dev/token", json=payload)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_body"


async def test_dev_token_is_404_outside_dev_mode(prod_shop: Shop) -> None:
    response = await prod_shop.client.post("/api/dev/token", json={"user_id": "alice"})
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


# -- partial stacks and the standalone app ----------------------------------


async def test_routes_of_services_that_do_not_run_here_answer_503() -> None:
    async with open_shop("memory", only=("order",)) as shop:
        post = await shop.place("alice", body({"sku": "A", "qty": 1}))
        assert post.status_code == 503
        listed = await shop.client.get("/api/orders", headers=auth("alice"))
        assert listed.status_code == 503


async def test_create_app_runs_the_stack_in_its_lifespan() -> None:
    bus = open_bus("memory://")
    await bus.start()
    stack = StubStack(bus, poll_timeout_ms=200)
    app = create_app(stack, jwt_secret=SECRET, dev_mode=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            token = (await client.post("/api/dev/token", json={"user_id": "zoe"})).json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            placed = await client.post(
                "/api/orders", json=body({"sku": "A", "qty": 1}), headers=headers
            )
            order_id = placed.json()["order_id"]

            async def confirmed() -> bool:
                while True:
                    got = await client.get(f"/api/orders/{order_id}", headers=headers)
                    if got.status_code == 200 and got.json()["status"] == "confirmed":
                        return True
                    await asyncio.sleep(0.05)

            assert await asyncio.wait_for(confirmed(), 30)
    assert not stack.runners["order"].loop._task
    await bus.stop()
