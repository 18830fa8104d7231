"""The materialized view: dedupe by event id, versions only move forward."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from backend_stubs.order_view import OrderView
from backend_stubs.store import Store
from orderpush_core.bus import EventBus, OutgoingRecord, open_bus
from orderpush_core.events import TOPIC_OF_TYPE, Event, encode_event, make_event
from tests.stubs_support import eventually, read_topic

AT = "2026-11-27T15:46:00.123Z"


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    bus = open_bus("memory://")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
def view(bus: EventBus) -> OrderView:
    return OrderView(bus, Store())


def event(type_: str, *, user: str = "alice", order: str = "ord_1", **kw: Any) -> Event:
    return make_event(type_, order_id=order, user_id=user, **kw)


def at(e: Event, occurred_at: str) -> Event:
    return msgspec.structs.replace(e, occurred_at=occurred_at)


def status(view: OrderView, user: str = "alice", order: str = "ord_1") -> tuple[str, int]:
    found = view.get_order(user, order)
    assert found is not None
    return found["status"], found["version"]


def test_a_version_that_is_not_newer_changes_nothing(view: OrderView) -> None:
    view.apply(event("order.confirmed", status="confirmed", version=2))
    view.apply(event("order.pending", status="pending", version=1, data={"items": [1]}))
    view.apply(event("order.pending", status="pending", version=2))
    assert status(view) == ("confirmed", 2)
    found = view.get_order("alice", "ord_1")
    assert found is not None and len(found["timeline"]) == 3
    assert found["items"] == [1]


def test_events_are_stored_once_by_event_id(view: OrderView) -> None:
    e = event("payment.authorized", data={"items": [{"sku": "A", "qty": 1}]})
    assert view.apply(e) is True
    assert view.apply(e) is False
    found = view.get_order("alice", "ord_1")
    assert found is not None and len(found["timeline"]) == 1


def test_status_before_the_order_service_spoke(view: OrderView) -> None:
    view.apply(event("payment.authorized", order="ord_a"))
    view.apply(event("payment.declined", order="ord_d"))
    assert status(view, order="ord_a") == ("pending", 0)
    assert status(view, order="ord_d") == ("cancelled", 0)
    view.apply(event("order.cancelled", order="ord_d", status="cancelled", version=1))
    assert status(view, order="ord_d") == ("cancelled", 1)


def test_timeline_follows_the_saga_when_timestamps_tie(view: OrderView) -> None:
    # Arrival order across topics is arbitrary; here the effect comes first.
    for e in [
        event("order.confirmed", status="confirmed", version=2),
        event("billing.invoiced"),
        event("order.pending", status="pending", version=1),
        event("payment.authorized"),
    ]:
        view.apply(at(e, AT))
    found = view.get_order("alice", "ord_1")
    assert found is not None
    assert [t["type"] for t in found["timeline"]] == [
        "payment.authorized",
        "order.pending",
        "billing.invoiced",
        "order.confirmed",
    ]
    assert found["timeline"][1] == {
        "event_id": found["timeline"][1]["event_id"],
        "type": "order.pending",
        "occurred_at": AT,
        "status": "pending",
        "version": 1,
        "data": {},
    }
    assert "status" not in found["timeline"][0]


def test_created_and_updated_at_span_the_events(view: OrderView) -> None:
    view.apply(at(event("order.pending", status="pending", version=1), "2026-11-27T15:46:01.000Z"))
    view.apply(at(event("payment.authorized"), "2026-11-27T15:46:00.000+00:00"))
    view.apply(at(event("delivery.scheduled"), "2026-11-27T15:46:05.000Z"))
    (order,) = view.list_orders("alice")
    assert order["created_at"] == "2026-11-27T15:46:00.000+00:00"
    assert order["updated_at"] == "2026-11-27T15:46:05.000Z"


def test_an_event_cannot_move_an_order_to_another_user(view: OrderView) -> None:
    view.apply(event("order.pending", status="pending", version=1))
    assert (
        view.apply(event("order.confirmed", user="mallory", status="confirmed", version=2)) is False
    )
    assert status(view) == ("pending", 1)
    assert view.get_order("mallory", "ord_1") is None
    assert view.list_orders("mallory") == []


async def test_the_view_consumes_all_topics_and_sets_poison_aside(
    bus: EventBus, view: OrderView
) -> None:
    events = [
        event("payment.authorized"),
        event("order.pending", status="pending", version=1),
        event("inventory.reserved"),
        event("billing.invoiced"),
        event("delivery.scheduled"),
    ]
    records = [OutgoingRecord(topic_of(e), e.order_id, encode_event(e)) for e in events]
    await bus.publish([*records, OutgoingRecord("orders", "x", b"[]"), *records])
    await view.start()
    try:

        async def all_in() -> bool | None:
            found = view.get_order("alice", "ord_1")
            return (
                found is not None and len(found["timeline"]) == 5 and view.duplicates == 5
            ) or None

        await eventually(all_in, 10)
        letters = await read_topic(bus, "deadletter", lambda got: len(got) >= 1, 10)
        assert dict(letters[0].headers)["x-orderpush-consumer"] == b"order-view"
    finally:
        await view.stop()


def topic_of(e: Event) -> str:
    return TOPIC_OF_TYPE[e.type]
