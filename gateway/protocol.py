"""The WebSocket protocol `orderpush.v1` (docs/protocol.md section 2), without I/O.

Parsing of client messages and encoding of server messages live here so the
conversation in `endpoint.py` only decides *what* to say, never how.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Final

import msgspec

SUBPROTOCOL: Final = "orderpush.v1"
#: The cookie a browser's token travels in (the pages set it; /ws reads it).
TOKEN_COOKIE = "orderpush_token"


class OrderState(msgspec.Struct, frozen=True):
    """One order in a snapshot (docs/protocol.md: `snapshot.orders[]`)."""

    order_id: str
    status: str
    version: int
    updated_at: str


class CloseCode(IntEnum):
    """Close codes. 4xxx below 4010 mean "fix something before reconnecting"
    (except 4008/4009, which a client may retry); 1012 means "reconnect now"."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    #: Extension: too many sockets waiting to authenticate on this instance.
    TRY_AGAIN_LATER = 1013
    TOKEN_INVALID = 4001
    ORIGIN_NOT_ALLOWED = 4003
    AUTH_TIMEOUT = 4008
    CLIENT_TOO_SLOW = 4009
    RATE_LIMITED = 4029
    #: Extension: the user holds ORDERPUSH_MAX_SOCKETS_PER_USER sockets already.
    TOO_MANY_SOCKETS = 4030


# -- client to server --------------------------------------------------------


class Auth(msgspec.Struct, tag="auth", tag_field="type", frozen=True):
    token: str
    cursor: str | None = None


class Ping(msgspec.Struct, tag="ping", tag_field="type", frozen=True):
    pass


class Resume(msgspec.Struct, tag="resume", tag_field="type", frozen=True):
    cursor: str


ClientMessage = Auth | Ping | Resume


class ProtocolError(ValueError):
    """A client message we cannot act on; answered with an `error` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Typed(msgspec.Struct):
    type: str = ""


_client_decoder: Final = msgspec.json.Decoder(ClientMessage)
_type_decoder: Final = msgspec.json.Decoder(_Typed)
KNOWN_TYPES: Final = frozenset({"auth", "ping", "resume"})


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Decode one client frame; unknown fields are ignored (forward compatible)."""
    try:
        kind = _type_decoder.decode(data).type
    except msgspec.DecodeError:
        raise ProtocolError("bad_message", "message is not a JSON object") from None
    if kind not in KNOWN_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}")
    try:
        message: ClientMessage = _client_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_message", f"{kind}: {exc}") from None
    return message


# -- server to client --------------------------------------------------------


class Welcome(msgspec.Struct, tag="welcome", tag_field="type"):
    user_id: str
    connection_id: str
    heartbeat_s: float


class SnapshotMessage(msgspec.Struct, tag="snapshot", tag_field="type"):
    orders: Sequence[OrderState]
    cursor: str


class EventMessage(msgspec.Struct, tag="event", tag_field="type", omit_defaults=True):
    cursor: str
    # The record value exactly as it came off the bus (unknown fields kept).
    event: msgspec.Raw
    # Extension: the record's W3C trace context, when it had one.
    traceparent: str | None = None


class Resumed(msgspec.Struct, tag="resumed", tag_field="type"):
    replayed: int
    cursor: str


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class ErrorMessage(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str


ServerMessage = Welcome | SnapshotMessage | EventMessage | Resumed | Pong | ErrorMessage

_encoder: Final = msgspec.json.Encoder()


def encode(message: ServerMessage) -> str:
    return _encoder.encode(message).decode()


def event_frame(cursor: str, raw: bytes, traceparent: str | None = None) -> str:
    """The `event` message for one delivery; built once, sent to every socket."""
    return encode(EventMessage(cursor=cursor, event=msgspec.Raw(raw), traceparent=traceparent))
