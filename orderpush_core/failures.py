"""Outage or poison: is an error worth retrying for ever?

A consumer that cannot hand a record on must decide between waiting and
setting the record aside. An outage (the bus or the store unreachable, busy,
out of memory, read-only) ends by itself and affects every record: retrying
until it ends loses nothing. Any other error may come from the record itself
(a key of the wrong type, an output too large for the broker): retried for
ever, it would stall its partition behind it, so it is retried a bounded
number of times and then set aside on the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from orderpush_core.bus.base import BusError

#: Redis error replies that describe the server's state, not the command:
#: loading, out of memory, a read-only replica, a busy script, cluster moves,
#: a script cache emptied by a restart.
REDIS_OUTAGE_REPLIES: Final = frozenset(
    {
        "LOADING",
        "OOM",
        "READONLY",
        "BUSY",
        "MISCONF",
        "MASTERDOWN",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOSCRIPT",
    }
)
#: Kafka errors caused by what a record holds; every other Kafka error is
#: an outage (broker away, leader moving, request timed out, rebalance).
KAFKA_RECORD_ERRORS: Final = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "CorruptRecordException",
        "InvalidRecordError",
    }
)
#: Attempts at a batch or record failing with a non-outage error before the
#: record is looked for and set aside.
POISON_ATTEMPTS: Final = 3


class OutageError(RuntimeError):
    """A dependency (the session store, ...) is away: retried until it is back.
    Raised as its own subclass by the module that knows the dependency."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the bus or the store is away, rather than that
    something is wrong with what was sent."""
    for error in _chain(exc):
        kind = type(error)
        module = kind.__module__
        if module.startswith("redis"):
            names = {c.__name__ for c in kind.__mro__}
            if names & {"ConnectionError", "TimeoutError"}:
                return True
            reply = str(error).split(" ", 1)[0]
            return reply in REDIS_OUTAGE_REPLIES
        if module.startswith("aiokafka"):
            return kind.__name__ not in KAFKA_RECORD_ERRORS
        if isinstance(error, OSError | TimeoutError | OutageError):
            return True
    # A bus error with no Kafka error behind it (a stopped bus, a timeout).
    return isinstance(exc, BusError)
