"""Unit tests of orderpush_core/bus/poison.py: sort_records and its dead letters."""

from __future__ import annotations

import logging

import pytest

from orderpush_core.bus.base import OutgoingRecord, Record
from orderpush_core.bus.poison import dead_letter, sort_records
from orderpush_core.events import DEAD_LETTER_TOPIC, encode_event, make_event

TRACE = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


def good(offset: int, order: str = "o1") -> Record:
    event = make_event(
        "order.pending", order_id=order, user_id="alice", status="pending", version=1
    )
    return Record("orders", 2, offset, order, encode_event(event), 0)


def bad(offset: int, value: bytes, key: str | None = "o9") -> Record:
    return Record("orders", 2, offset, key, value, 0, headers=(TRACE,))


def headers_of(letter: OutgoingRecord) -> dict[str, bytes]:
    return dict(letter.headers)


def test_valid_records_come_out_decoded_in_their_order() -> None:
    records = [good(10, "a"), good(11, "b"), good(12, "c")]
    batch = sort_records(records)
    assert [(r.offset, e.order_id) for r, e in batch.events] == [(10, "a"), (11, "b"), (12, "c")]
    assert batch.dead_letters == [] and batch.undecodable_batches == 0


def test_poison_records_are_set_aside_and_the_rest_goes_on() -> None:
    records = [good(10, "a"), bad(11, b"not json"), good(12, "b"), bad(13, b'{"type":"x"}')]
    batch = sort_records(records)
    assert [r.offset for r, _ in batch.events] == [10, 12]
    assert [headers_of(d)["x-orderpush-source"] for d in batch.dead_letters] == [
        b"orders/2/11",
        b"orders/2/13",
    ]
    assert batch.undecodable_batches == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"type":"order.pending"}', b"Object missing required field `event_id`"),
        (b"", b"Input data was truncated"),  # a tombstone
        (b"[]", b"Expected `object`, got `array`"),
    ],
    ids=["missing-field", "tombstone", "array"],
)
def test_the_dead_letter_says_why(value: bytes, reason: bytes) -> None:
    (letter,) = sort_records([bad(5, value)]).dead_letters
    assert headers_of(letter)["x-orderpush-reason"] == reason


def test_a_rule_break_is_named_in_the_reason() -> None:
    event = make_event("payment.authorized", order_id="o1", user_id="alice")
    value = encode_event(event).replace(b'"occurred_at":"', b'"occurred_at":"x')
    (letter,) = sort_records([bad(5, value)]).dead_letters
    assert b"`occurred_at` is not an RFC 3339 timestamp" in headers_of(letter)["x-orderpush-reason"]


def test_the_dead_letter_keeps_key_value_and_headers() -> None:
    (letter,) = sort_records([bad(7, b"{oops")]).dead_letters
    assert letter.topic == DEAD_LETTER_TOPIC == "deadletter"
    assert (letter.key, letter.value) == ("o9", b"{oops")
    assert letter.headers[0] == TRACE  # original headers first, then ours
    assert [name for name, _ in letter.headers] == [
        "traceparent",
        "x-orderpush-reason",
        "x-orderpush-source",
    ]


def test_a_record_without_a_key_gets_an_empty_key() -> None:
    (letter,) = sort_records([bad(7, b"{oops", key=None)]).dead_letters
    assert letter.key == ""


def test_an_undecodable_batch_is_one_counted_dead_letter() -> None:
    why = "undecodable zstd batch, offsets 20-29: no codec"
    whole = Record("orders", 1, 29, None, b"", 0, undecodable=why)
    batch = sort_records([good(19), whole, good(30)])
    assert [r.offset for r, _ in batch.events] == [19, 30]
    assert batch.undecodable_batches == 1
    (letter,) = batch.dead_letters
    assert headers_of(letter) == {
        "x-orderpush-reason": why.encode(),
        "x-orderpush-source": b"orders/1/29",
    }
    assert (letter.key, letter.value) == ("", b"")


def test_a_poison_record_is_logged_with_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="orderpush.poison"):
        sort_records([bad(11, b"nope")])
    (entry,) = caplog.records
    assert entry.getMessage().startswith("poison record orders[2]@11 set aside: ")


def test_dead_letter_can_name_any_reason() -> None:
    letter = dead_letter(bad(3, b"{}"), "recurring error: ResponseError: WRONGTYPE")
    assert headers_of(letter)["x-orderpush-reason"] == b"recurring error: ResponseError: WRONGTYPE"
