"""Unit tests of orderpush_core/events.py: the rules of docs/protocol.md section 1."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from orderpush_core.events import (
    TOPIC_OF_TYPE,
    TOPICS,
    Event,
    PoisonEvent,
    decode_event,
    encode_event,
    make_event,
    new_event_id,
    utc_now_rfc3339,
)


def valid(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "01JD7K3Q8W2M5V9X4T6R0B1C2D",
        "type": "order.confirmed",
        "order_id": "ord_7f3a9c",
        "user_id": "alice",
        "occurred_at": "2026-11-27T15:46:00.123Z",
        "status": "confirmed",
        "version": 3,
        "data": {"invoice_number": "INV-000042"},
    }
    record.update(changes)
    return record


def without(field: str) -> dict[str, Any]:
    record = valid()
    del record[field]
    return record


def decode(record: object) -> Event:
    return decode_event(json.dumps(record).encode())


def refused(record: object) -> str:
    with pytest.raises(PoisonEvent) as caught:
        decode(record)
    return str(caught.value)


def test_the_documented_example_decodes_field_for_field() -> None:
    event = decode(valid())
    assert event == Event(
        event_id="01JD7K3Q8W2M5V9X4T6R0B1C2D",
        type="order.confirmed",
        order_id="ord_7f3a9c",
        user_id="alice",
        occurred_at="2026-11-27T15:46:00.123Z",
        status="confirmed",
        version=3,
        data={"invoice_number": "INV-000042"},
    )
    assert event.is_order_event


@pytest.mark.parametrize("field", ["event_id", "type", "order_id", "user_id", "occurred_at"])
def test_each_always_required_field_missing_is_poison_and_named(field: str) -> None:
    assert refused(without(field)) == f"Object missing required field `{field}`"


@pytest.mark.parametrize("field", ["event_id", "type", "order_id", "user_id"])
def test_each_non_empty_field_empty_is_poison_and_named(field: str) -> None:
    assert f"`{field}` must not be empty" in refused(valid(**{field: ""}))


@pytest.mark.parametrize("field", ["event_id", "type", "order_id", "user_id", "occurred_at"])
def test_a_string_field_of_another_type_is_poison(field: str) -> None:
    reason = refused(valid(**{field: 42}))
    assert "Expected `str`" in reason and field in reason


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-27T15:46:00.123Z",
        "2026-11-27T15:46:00Z",
        "2026-11-27T15:46:00.123+00:00",
        "2026-11-27T16:46:00.123+01:00",
        "2026-11-27T15:46:00.123456-05:30",
    ],
)
def test_a_timestamp_with_a_zone_is_accepted(occurred_at: str) -> None:
    assert decode(valid(occurred_at=occurred_at)).occurred_at == occurred_at


@pytest.mark.parametrize(
    "occurred_at", ["2026-11-27T15:46:00.123", "2026-11-27 15:46:00", "2026-11-27"]
)
def test_a_timestamp_without_a_zone_is_poison(occurred_at: str) -> None:
    assert "`occurred_at` must carry a time zone" in refused(valid(occurred_at=occurred_at))


@pytest.mark.parametrize("occurred_at", ["yesterday", "", "2026-13-01T00:00:00Z", "1700000000"])
def test_a_string_that_is_no_timestamp_is_poison(occurred_at: str) -> None:
    assert "`occurred_at` is not an RFC 3339 timestamp" in refused(valid(occurred_at=occurred_at))


@pytest.mark.parametrize(
    "type_", ["order.pending", "order.confirmed", "order.cancelled", "order.x"]
)
@pytest.mark.parametrize("field", ["status", "version"])
def test_status_and_version_are_required_on_order_events(type_: str, field: str) -> None:
    message = f"`{field}` is required on order.* events"
    assert message in refused(valid(type=type_, **{field: None}))
    record = valid(type=type_)
    del record[field]
    assert message in refused(record)


@pytest.mark.parametrize("type_", ["payment.authorized", "inventory.rejected", "brand.new"])
def test_status_and_version_may_be_null_or_missing_elsewhere(type_: str) -> None:
    event = decode(valid(type=type_, status=None, version=None))
    assert (event.status, event.version, event.is_order_event) == (None, None, False)
    record = valid(type=type_)
    del record["status"], record["version"]
    assert decode(record).version is None


@pytest.mark.parametrize("version", [0, -1])
def test_a_version_below_one_is_poison(version: int) -> None:
    assert "`version` must be >= 1" in refused(valid(version=version))
    assert "`version` must be >= 1" in refused(valid(type="billing.invoiced", version=version))


def test_a_version_of_another_type_is_poison() -> None:
    assert "Expected `int | null`" in refused(valid(version="3"))
    assert "Expected `int | null`" in refused(valid(version=1.5))


def test_any_status_string_is_accepted() -> None:
    assert decode(valid(status="on_the_moon")).status == "on_the_moon"


def test_data_defaults_to_an_empty_object_and_null_or_a_list_is_refused() -> None:
    assert decode(without("data")).data == {}
    assert "Expected `object`, got `null`" in refused(valid(data=None))
    assert "Expected `object`, got `array`" in refused(valid(data=[1]))


def test_unknown_fields_are_ignored() -> None:
    event = decode(valid(priority="high", nested={"a": [1, 2]}))
    assert event == decode(valid())


@pytest.mark.parametrize("value", [b"", b"null", b"[]", b'"event"', b"{", b"\xff\xfe"], ids=repr)
def test_a_value_that_is_not_a_json_object_is_poison(value: bytes) -> None:
    # b"" is a tombstone: a record without a value.
    with pytest.raises(PoisonEvent) as caught:
        decode_event(value)
    assert str(caught.value)


def test_an_unknown_type_is_accepted() -> None:
    assert decode(valid(type="loyalty.points_added", status=None, version=None)).type == (
        "loyalty.points_added"
    )


def test_encode_then_decode_gives_the_same_event() -> None:
    event = make_event(
        "order.pending", order_id="o1", user_id="alice", status="pending", version=1, data={"a": 1}
    )
    assert decode_event(encode_event(event)) == event


def test_make_event_writes_utc_with_milliseconds_and_validates() -> None:
    stamp = utc_now_rfc3339()
    assert len(stamp) == len("2026-11-27T15:46:00.123Z") and stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).utcoffset() is not None
    with pytest.raises(ValueError, match="`status` is required"):
        make_event("order.pending", order_id="o1", user_id="alice", version=1)


def test_event_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_event_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_every_type_maps_to_one_of_the_five_topics() -> None:
    assert set(TOPIC_OF_TYPE.values()) == set(TOPICS)
    assert all(TOPIC_OF_TYPE[t] == "orders" for t in TOPIC_OF_TYPE if t.startswith("order."))
