"""The saga end to end through the storefront API, on every bus backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backend_stubs.stack import SERVICES
from orderpush_core.bus import OutgoingRecord
from orderpush_core.events import DEAD_LETTER_TOPIC
from orderpush_core.tracing import trace_id, traceparent_of
from tests.backends import BUS_BACKENDS
from tests.stubs_support import (
    DECLINED_CARD,
    Shop,
    auth,
    decoded,
    has_types,
    open_shop,
    read_topic,
    types,
)

DOWNSTREAM = ("inventory", "billing", "delivery")


@pytest.fixture(params=BUS_BACKENDS)
async def shop(request: pytest.FixtureRequest) -> AsyncIterator[Shop]:
    async with open_shop(request.param) as shop:
        yield shop


@pytest.fixture(params=BUS_BACKENDS)
async def upstream_shop(request: pytest.FixtureRequest) -> AsyncIterator[Shop]:
    """Payment, order and the view only: downstream is started by the test."""
    async with open_shop(request.param, only=("payment", "order", "view")) as shop:
        yield shop


async def test_happy_path_goes_pending_then_confirmed(upstream_shop: Shop) -> None:
    shop = upstream_shop
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await shop.place(
        "alice",
        {"items": [{"sku": "SKU-1", "qty": 2}], "payment": {"card": "4242424242424242"}},
        traceparent=traceparent,
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["order_id"].startswith("ord_")
    order_id = body["order_id"]

    # Without inventory, billing and delivery the order can only be pending.
    pending = await shop.wait_order("alice", order_id, lambda o: o["version"] == 1)
    assert pending["status"] == "pending"
    assert pending["items"] == [{"sku": "SKU-1", "qty": 2}]

    await shop.add_stack(DOWNSTREAM)
    want = (
        "payment.authorized",
        "order.pending",
        "inventory.reserved",
        "billing.invoiced",
        "delivery.scheduled",
        "order.confirmed",
    )
    confirmed = await shop.wait_order("alice", order_id, has_types(*want))
    assert (confirmed["status"], confirmed["version"]) == ("confirmed", 2)
    assert sorted(types(confirmed)) == sorted(want)
    assert types(confirmed)[0] == "payment.authorized"
    assert types(confirmed)[-1] == "order.confirmed"
    final = confirmed["timeline"][-1]
    assert final["status"] == "confirmed" and final["version"] == 2
    assert final["data"]["invoice_number"].startswith("INV-")
    assert "start" in final["data"]["delivery_slot"]

    listed = (await shop.client.get("/api/orders", headers=auth("alice"))).json()
    assert [(o["order_id"], o["status"], o["version"]) for o in listed["orders"]] == [
        (order_id, "confirmed", 2)
    ]

    # One trace from the HTTP request through every event it caused.
    orders = await read_topic(shop.bus, "orders", lambda got: len(got) >= 2)
    for record in orders:
        parent = traceparent_of(record.headers)
        assert parent is not None and trace_id(parent) == trace_id(traceparent)


async def test_declined_card_answers_402_and_cancels_at_version_1(shop: Shop) -> None:
    response = await shop.place(
        "bob", {"items": [{"sku": "A", "qty": 1}], "payment": {"card": DECLINED_CARD}}
    )
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "payment_declined"
    order_id = body["order_id"]
    order = await shop.wait_order("bob", order_id, has_types("order.cancelled"))
    assert (order["status"], order["version"]) == ("cancelled", 1)
    cancelled = order["timeline"][-1]
    assert cancelled["type"] == "order.cancelled"
    assert cancelled["data"]["reason"] == "payment_declined"
    assert "payment.declined" in types(order)
    # Nothing was taken, so nothing is given back, and nothing goes downstream.
    await asyncio.sleep(1.0)
    later = await shop.order("bob", order_id)
    assert later is not None
    assert set(types(later)) == {"payment.declined", "order.cancelled"}
    assert shop.stack.payment is not None
    assert shop.stack.payment.payment_status(order_id) == "declined"


async def test_out_of_stock_cancels_at_version_2_and_refunds(shop: Shop) -> None:
    response = await shop.place(
        "carol",
        {
            "items": [{"sku": "SKU-1", "qty": 1}, {"sku": "OUT-OF-STOCK", "qty": 3}],
            "payment": {"card": "4242424242424242"},
        },
    )
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    order = await shop.wait_order(
        "carol",
        order_id,
        has_types(
            "inventory.rejected",
            "order.cancelled",
            "payment.refunded",
            "billing.invoiced",
            "delivery.scheduled",
        ),
    )
    # Billing and delivery answered too, but a cancelled order stays cancelled.
    assert (order["status"], order["version"]) == ("cancelled", 2)
    assert "order.confirmed" not in types(order)
    rejected = next(e for e in order["timeline"] if e["type"] == "inventory.rejected")
    assert rejected["data"]["sku"] == "OUT-OF-STOCK"
    cancelled = next(e for e in order["timeline"] if e["type"] == "order.cancelled")
    assert (cancelled["version"], cancelled["data"]["sku"]) == (2, "OUT-OF-STOCK")
    refund = next(e for e in order["timeline"] if e["type"] == "payment.refunded")
    assert refund["data"]["amount_cents"] > 0
    assert shop.stack.payment is not None
    assert shop.stack.payment.payment_status(order_id) == "refunded"


async def test_versions_grow_by_one_per_status_change(shop: Shop) -> None:
    ids = []
    for skus in (("A",), ("OUT-OF-STOCK",)):
        response = await shop.place(
            "dave",
            {
                "items": [{"sku": s, "qty": 1} for s in skus],
                "payment": {"card": "4242424242424242"},
            },
        )
        ids.append(response.json()["order_id"])
    response = await shop.place(
        "dave", {"items": [{"sku": "A", "qty": 1}], "payment": {"card": DECLINED_CARD}}
    )
    ids.append(response.json()["order_id"])
    for order_id in ids:
        await shop.wait_order("dave", order_id, lambda o: o["status"] != "pending")
    records = await read_topic(
        shop.bus,
        "orders",
        lambda got: len({e["order_id"] for e in decoded(got) if e["status"] != "pending"}) >= 3,
    )
    versions: dict[str, list[int]] = {}
    for event in decoded(records):
        versions.setdefault(event["order_id"], []).append(event["version"])
    assert {k: v for k, v in versions.items() if k in ids} == {
        ids[0]: [1, 2],
        ids[1]: [1, 2],
        ids[2]: [1],
    }


async def test_poison_record_is_set_aside_and_the_saga_goes_on(shop: Shop) -> None:
    await shop.bus.publish(
        [
            OutgoingRecord("payments", "ord_poison", b"{not json"),
            OutgoingRecord("payments", "ord_poison2", b'{"type": "payment.authorized"}'),
        ]
    )
    response = await shop.place(
        "erin", {"items": [{"sku": "SKU-9", "qty": 1}], "payment": {"card": "4242424242424242"}}
    )
    order_id = response.json()["order_id"]
    order = await shop.wait_order("erin", order_id, lambda o: o["status"] == "confirmed")
    assert order["version"] == 2

    letters = await read_topic(
        shop.bus,
        DEAD_LETTER_TOPIC,
        lambda got: (
            {b"{not json", b'{"type": "payment.authorized"}'}
            <= {
                r.value
                for r in got
                if dict(r.headers).get("x-orderpush-consumer", b"").endswith(b"order")
            }
        ),
    )
    from_order = [r for r in letters if dict(r.headers)["x-orderpush-consumer"].endswith(b"order")]
    assert all(dict(r.headers)["x-orderpush-source"].startswith(b"payments/") for r in from_order)
    assert shop.stack.runners["order"].stats.dead_letters >= 2


async def test_idempotency_key_returns_the_first_answer(shop: Shop) -> None:
    body = {"items": [{"sku": "SKU-1", "qty": 1}], "payment": {"card": "4242424242424242"}}
    first = await shop.place("frank", body, **{"Idempotency-Key": "k-1"})
    again = await shop.place("frank", body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers.get("idempotent-replayed") == "true"
    order_id = first.json()["order_id"]
    await shop.wait_order("frank", order_id, lambda o: o["status"] == "confirmed")
    payments = await read_topic(
        shop.bus, "payments", lambda got: any(e["order_id"] == order_id for e in decoded(got))
    )
    assert [e["type"] for e in decoded(payments) if e["user_id"] == "frank"] == [
        "payment.authorized"
    ]


async def test_the_whole_stack_runs_every_service(shop: Shop) -> None:
    assert set(shop.stack.runners) == set(SERVICES)
    assert shop.stack.view is not None
