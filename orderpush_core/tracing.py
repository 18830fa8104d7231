"""W3C Trace Context (`traceparent`) passed along the saga.

One reader of the header for the whole system (`traceparent_of`): the
gateway pushes it on with each event; the stubs start a child of it.

The stubs do no tracing themselves; they keep one trace id from the HTTP
request that placed an order through every event it caused, so an outside
tracer (or a person reading kcat output) can follow one order across topics.
Each hop gets a new span id with the same trace id, as a child span would.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Final

HEADER: Final = "traceparent"
#: W3C's version 00 is 55 characters; bound what a producer can make us store
#: and push on.
TRACEPARENT_MAX_CHARS: Final = 128

_TRACEPARENT: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    """The start of a new trace (sampled)."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span; a missing or malformed parent starts a new trace."""
    if parent is not None:
        match = _TRACEPARENT.match(parent.strip().lower())
        # All-zero ids are invalid by the spec; treat them like no parent.
        if match and match[1] != "0" * 32 and match[2] != "0" * 16:
            return f"00-{match[1]}-{secrets.token_hex(8)}-{match[3]}"
    return new_traceparent()


def traceparent_of(headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The `traceparent` of a record's headers, if it has a readable one (ASCII,
    at most TRACEPARENT_MAX_CHARS). Used by the gateway, which passes it on
    to clients as it is, and by the stubs, which start a child of it."""
    for name, value in headers:
        if name.lower() == HEADER and len(value) <= TRACEPARENT_MAX_CHARS:
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def trace_id(traceparent: str) -> str | None:
    match = _TRACEPARENT.match(traceparent)
    return match[1] if match else None
