"""The whole saga through the demo (one process, embedded default): orders
placed over real HTTP, events pushed to real WebSocket clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from orderpush.demo import build_demo_app
from tests.backends import unique
from tests.harness import serve
from tests.wsclient import Client, connect

GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


@pytest.fixture
async def demo() -> AsyncIterator[str]:
    app = build_demo_app(Settings(sessions_url=f"memory://{unique('t')}"))
    async with serve(app) as addr:
        yield addr


async def dev_token(http: httpx.AsyncClient, user: str) -> str:
    response = await http.post("/api/dev/token", json={"user_id": user})
    assert response.status_code == 200
    token: str = response.json()["token"]
    return token


def order_body(*skus: str, card: str = GOOD_CARD) -> dict[str, Any]:
    return {"items": [{"sku": s, "qty": 1} for s in skus], "payment": {"card": card}}


async def events_until(client: Client, final_types: set[str]) -> list[dict[str, Any]]:
    """Events until one of `final_types` has arrived (each wait bounded)."""
    seen: list[dict[str, Any]] = []
    while not any(e["type"] in final_types for e in seen):
        (message,) = await client.events(1, timeout_s=10)
        seen.append(message["event"])
    return seen


async def test_order_is_pushed_pending_then_confirmed_to_its_user_only(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        alice_token = await dev_token(http, "alice")
        bob_token = await dev_token(http, "bob")
        async with connect(demo, alice_token) as alice, connect(demo, bob_token) as bob:
            await alice.recv_type("snapshot")
            await bob.recv_type("snapshot")
            response = await http.post(
                "/api/orders",
                json=order_body("SKU-1"),
                headers={"Authorization": f"Bearer {alice_token}"},
            )
            assert response.status_code == 202
            order_id = response.json()["order_id"]
            assert response.json()["status"] == "pending"

            events = await events_until(alice, {"order.confirmed"})
            assert all(e["order_id"] == order_id and e["user_id"] == "alice" for e in events)
            order_events = [
                (e["type"], e["version"]) for e in events if e["type"].startswith("order.")
            ]
            assert order_events == [("order.pending", 1), ("order.confirmed", 2)]
            types = {e["type"] for e in events}
            assert {
                "payment.authorized",
                "inventory.reserved",
                "billing.invoiced",
                "delivery.scheduled",
            } <= types
            assert await bob.silent(0.5)


async def test_declined_card_gives_402_and_a_cancelled_order(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        token = await dev_token(http, "carol")
        async with connect(demo, token) as carol:
            await carol.recv_type("snapshot")
            response = await http.post(
                "/api/orders",
                json=order_body("SKU-1", card=DECLINED_CARD),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 402
            assert response.json()["error"] == "payment_declined"
            events = await events_until(carol, {"order.cancelled"})
            cancelled = events[-1]
            assert cancelled["order_id"] == response.json()["order_id"]
            assert cancelled["status"] == "cancelled" and cancelled["version"] == 1
            assert "payment.declined" in {e["type"] for e in events}


async def test_out_of_stock_cancels_and_refunds(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        token = await dev_token(http, "dave")
        async with connect(demo, token) as dave:
            await dave.recv_type("snapshot")
            response = await http.post(
                "/api/orders",
                json=order_body("SKU-1", "OUT-OF-STOCK"),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 202
            events = await events_until(dave, {"payment.refunded"})
            types = [e["type"] for e in events]
            assert "inventory.rejected" in types
            assert "order.confirmed" not in types
            cancelled = next(e for e in events if e["type"] == "order.cancelled")
            assert (cancelled["status"], cancelled["version"]) == ("cancelled", 2)
            assert types.index("order.cancelled") < types.index("payment.refunded")

            timeline = await http.get(
                f"/api/orders/{response.json()['order_id']}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert timeline.status_code == 200
            assert timeline.json()["status"] == "cancelled"


async def test_malformed_order_and_missing_token_are_refused(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        token = await dev_token(http, "erin")
        bad = await http.post(
            "/api/orders",
            json={"items": [{"sku": "", "qty": 0}], "payment": {"card": "12"}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert bad.status_code == 422
        fields = bad.json()["fields"]
        assert {"items[0].sku", "items[0].qty", "payment.card"} <= set(fields)
        anonymous = await http.post("/api/orders", json=order_body("SKU-1"))
        assert anonymous.status_code == 401
        # The server keeps serving.
        ok = await http.post(
            "/api/orders", json=order_body("SKU-1"), headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 202
