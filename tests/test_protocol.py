"""Unit tests of gateway/protocol.py against docs/protocol.md section 2 (no I/O)."""

from __future__ import annotations

import json

import pytest

from gateway.protocol import (
    SUBPROTOCOL,
    Auth,
    CloseCode,
    ErrorMessage,
    OrderState,
    Ping,
    Pong,
    ProtocolError,
    Resume,
    Resumed,
    SnapshotMessage,
    Welcome,
    encode,
    event_frame,
    parse_client_message,
)


def test_the_subprotocol_is_orderpush_v1() -> None:
    assert SUBPROTOCOL == "orderpush.v1"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type":"auth","token":"t"}', Auth(token="t")),
        ('{"type":"auth","token":"t","cursor":"7-3"}', Auth(token="t", cursor="7-3")),
        ('{"type":"ping"}', Ping()),
        ('{"type":"resume","cursor":"7-3"}', Resume(cursor="7-3")),
        (b'{"type":"resume","cursor":"0-0"}', Resume(cursor="0-0")),
    ],
)
def test_each_client_message_decodes(frame: str | bytes, expected: object) -> None:
    assert parse_client_message(frame) == expected


def test_unknown_fields_are_ignored() -> None:
    frame = '{"type":"resume","cursor":"7-3","since":"yesterday","extra":{"a":[1]}}'
    assert parse_client_message(frame) == Resume(cursor="7-3")


@pytest.mark.parametrize(
    "frame", ["[]", "null", "1", '"ping"', "{", "", "\x00", '{"type":"ping"'], ids=repr
)
def test_a_frame_that_is_not_a_json_object_is_bad_message(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert caught.value.code == "bad_message"
    assert caught.value.message == "message is not a JSON object"


def test_a_type_that_is_not_a_string_is_bad_message() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type":1}')
    assert caught.value.code == "bad_message"


@pytest.mark.parametrize(
    ("frame", "named"),
    [
        ('{"type":"subscribe"}', "'subscribe'"),
        ('{"type":"AUTH","token":"t"}', "'AUTH'"),
        ('{"type":"pong"}', "'pong'"),
        ("{}", "''"),  # a missing type is an unknown one
    ],
)
def test_an_unknown_type_is_unknown_type_and_named(frame: str, named: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert caught.value.code == "unknown_type"
    assert caught.value.message == f"unknown message type {named}"
    assert str(caught.value) == caught.value.message


@pytest.mark.parametrize(
    ("frame", "prefix", "field"),
    [
        ('{"type":"resume"}', "resume: ", "cursor"),
        ('{"type":"resume","cursor":5}', "resume: ", "cursor"),
        ('{"type":"auth"}', "auth: ", "token"),
        ('{"type":"auth","token":null}', "auth: ", "token"),
        ('{"type":"auth","token":"t","cursor":7}', "auth: ", "cursor"),
    ],
)
def test_a_known_type_with_a_missing_or_ill_typed_field_is_bad_message(
    frame: str, prefix: str, field: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(frame)
    assert caught.value.code == "bad_message"
    assert caught.value.message.startswith(prefix)
    assert f"`{field}`" in caught.value.message or f"$.{field}" in caught.value.message


def test_the_documented_missing_cursor_message_is_word_for_word() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message('{"type":"resume"}')
    assert caught.value.message == "resume: Object missing required field `cursor`"


def test_close_codes_have_their_documented_numbers() -> None:
    assert {c.name: c.value for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "TOKEN_INVALID": 4001,
        "ORIGIN_NOT_ALLOWED": 4003,
        "AUTH_TIMEOUT": 4008,
        "CLIENT_TOO_SLOW": 4009,
        "RATE_LIMITED": 4029,
        "TOO_MANY_SOCKETS": 4030,
    }


def test_server_messages_encode_with_their_type_tag_and_documented_fields() -> None:
    welcome = json.loads(encode(Welcome(user_id="alice", connection_id="c1", heartbeat_s=25.0)))
    assert welcome == {
        "type": "welcome",
        "user_id": "alice",
        "connection_id": "c1",
        "heartbeat_s": 25.0,
    }
    assert json.loads(encode(Pong())) == {"type": "pong"}
    assert json.loads(encode(Resumed(replayed=12, cursor="7-54"))) == {
        "type": "resumed",
        "replayed": 12,
        "cursor": "7-54",
    }
    error = ErrorMessage(code="bad_message", message="message is not a JSON object")
    assert encode(error) == (
        '{"type":"error","code":"bad_message","message":"message is not a JSON object"}'
    )


def test_heartbeat_is_written_as_a_float() -> None:
    # docs/protocol.md: "heartbeat_s (a number, written as a float)".
    assert '"heartbeat_s":25.0' in encode(Welcome("alice", "c1", 25.0))


def test_a_snapshot_lists_orders_with_all_four_fields() -> None:
    orders = [OrderState("o1", "pending", 1, "2026-11-27T15:46:00.123Z")]
    assert json.loads(encode(SnapshotMessage(orders=orders, cursor="7-41"))) == {
        "type": "snapshot",
        "orders": [
            {
                "order_id": "o1",
                "status": "pending",
                "version": 1,
                "updated_at": "2026-11-27T15:46:00.123Z",
            }
        ],
        "cursor": "7-41",
    }


def test_an_event_frame_carries_the_record_value_byte_for_byte() -> None:
    raw = b'{"event_id":"e1","type":"x.y","future_field":[1,{"k":null}],"user_id":"alice"}'
    frame = event_frame("7-42", raw)
    assert frame == '{"type":"event","cursor":"7-42","event":' + raw.decode() + "}"
    assert "traceparent" not in frame  # omitted when the record had none


def test_an_event_frame_passes_the_traceparent_on() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    decoded = json.loads(event_frame("7-1", b"{}", tp))
    assert decoded == {"type": "event", "cursor": "7-1", "event": {}, "traceparent": tp}


def test_client_messages_are_immutable() -> None:
    message = parse_client_message('{"type":"resume","cursor":"7-3"}')
    assert isinstance(message, Resume)
    with pytest.raises(AttributeError):
        setattr(message, "cursor", "0-0")  # noqa: B010 (mypy would refuse the plain assignment)
    assert message.cursor == "7-3"
