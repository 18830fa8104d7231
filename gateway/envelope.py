"""The envelope: one bus record's event on its way from Kafka to the sockets.

It is built once, in the pump, from the Kafka record, and passed whole (never
field by field) through the session store's append, the cross-instance route
and the replay history to the hub, which pushes `raw` unchanged. A new field
that must reach the client (as `traceparent` did) is added here and in the
two places that serialise an envelope (the Redis history entry and the
routed message), not in every module on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

from orderpush_core.events import Event


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    #: The decoded event (routing, dedupe, the order view).
    event: Event
    #: The record value as it came off the bus: pushed unchanged, so fields
    #: this gateway does not know still reach clients.
    raw: bytes
    #: The record's bus timestamp (epoch ms): push latency is measured from it.
    produced_ms: int
    #: The record's W3C `traceparent` header, passed on to the client.
    traceparent: str | None = None
