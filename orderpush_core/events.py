"""The event model of the bus (docs/protocol.md section 1).

msgspec was chosen over pydantic because the gateway decodes every record on
the hot path: it validates straight from bytes into typed structs without an
intermediate dict and is several times faster. Unknown fields are ignored so
producers can add fields without breaking the gateway.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

TOPICS: Final = ("payments", "orders", "inventory", "billing", "delivery")
DEAD_LETTER_TOPIC: Final = "deadletter"
#: The latest order.* event of every order, keyed by order id, on a
#: compacted topic: what the gateway rebuilds Redis's order views from when
#: Redis comes back empty (docs/architecture.md, "Redis is a cache").
ORDER_STATE_TOPIC: Final = "order-state"
#: Topics Kafka compacts (keeps the last record per key) instead of deleting.
COMPACTED_TOPICS: Final = frozenset({ORDER_STATE_TOPIC})

#: Which topic each event type is written to.
TOPIC_OF_TYPE: Final[dict[str, str]] = {
    "payment.authorized": "payments",
    "payment.declined": "payments",
    "payment.refunded": "payments",
    "order.pending": "orders",
    "order.confirmed": "orders",
    "order.cancelled": "orders",
    "inventory.reserved": "inventory",
    "inventory.rejected": "inventory",
    "billing.invoiced": "billing",
    "delivery.scheduled": "delivery",
}


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """One order-lifecycle event. `status`/`version` are required on order.*."""

    event_id: str
    type: str
    order_id: str
    user_id: str
    occurred_at: str
    status: str | None = None
    version: int | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # msgspec turns ValueError raised here into a ValidationError, so a
        # semantic problem reads like a schema problem to the caller.
        for name in ("event_id", "type", "order_id", "user_id"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must not be empty")
        try:
            parsed = datetime.fromisoformat(self.occurred_at)
        except ValueError:
            raise ValueError("`occurred_at` is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise ValueError("`occurred_at` must carry a time zone (UTC)")
        if self.is_order_event:
            if self.status is None:
                raise ValueError("`status` is required on order.* events")
            if self.version is None:
                raise ValueError("`version` is required on order.* events")
        if self.version is not None and self.version < 1:
            raise ValueError("`version` must be >= 1")

    @property
    def is_order_event(self) -> bool:
        return self.type.startswith("order.")


class PoisonEvent(ValueError):
    """A record that is not valid JSON or lacks a required field."""


_decoder: Final = msgspec.json.Decoder(Event)
_encoder: Final = msgspec.json.Encoder()


def decode_event(value: bytes) -> Event:
    """Decode and validate one record value; raise PoisonEvent with the reason."""
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise PoisonEvent(str(exc)) from None


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def utc_now_rfc3339() -> str:
    """Current time as RFC 3339 UTC with milliseconds, e.g. 2026-11-27T15:46:00.123Z."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_event_id() -> str:
    """A unique, roughly time-ordered id (ms timestamp + random), like a ULID."""
    return f"{int(time.time() * 1000):013x}{uuid.uuid4().hex[:13]}"


def make_event(
    type_: str,
    *,
    order_id: str,
    user_id: str,
    status: str | None = None,
    version: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    return Event(
        event_id=new_event_id(),
        type=type_,
        order_id=order_id,
        user_id=user_id,
        occurred_at=utc_now_rfc3339(),
        status=status,
        version=version,
        data=data or {},
    )
