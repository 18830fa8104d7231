"""The accounting of a run: what each connection should get, and what it got.

No I/O here. `Ledger.expect` records that a user's connections must receive
an order event (identified by order id and version); `Ledger.observe`
records one event frame as a connection received it. From both come the
figures of the report: lost, duplicated, out of order, wrong user, latency.

An expectation may be registered after its event already arrived (with
`--source api` the order id is known only when the POST answers, and the
saga can be faster than that answer); `expect` then matches it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

#: An order event: (order_id, version).
Key = tuple[str, int]

#: How many examples of each problem a report quotes.
EXAMPLES_MAX = 5


@dataclass(frozen=True, slots=True)
class Received:
    """The fields of one pushed event that the accounting needs."""

    event_id: str
    type: str
    order_id: str
    user_id: str
    version: int | None = None
    sent_ns: int | None = None  # data.loadtest_sent_ns, when the load tester produced it

    @property
    def key(self) -> Key | None:
        if self.type.startswith("order.") and self.version is not None:
            return (self.order_id, self.version)
        return None


class ConnectionLog:
    """What one client connection (across its reconnections) received."""

    def __init__(self, index: int, user_id: str, url: str) -> None:
        self.index = index
        self.user_id = user_id
        self.url = url
        self.attached = False
        self.frames = 0  # event frames, whatever they carried
        self.event_ids: set[str] = set()
        self.arrivals: dict[Key, int] = {}  # first arrival (ns) of each order event
        self.last_version: dict[str, int] = {}
        self.matched = 0  # expected events that arrived
        self.duplicates = 0
        #: Event frames the cursor rule dropped (the server sent a repeat).
        self.repeats = 0
        self.out_of_order = 0
        self.wrong_user = 0
        self.bad_frames = 0
        self.examples: list[str] = []

    def _example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES_MAX:
            self.examples.append(f"connection {self.index} ({self.user_id}): {text}")

    def observe(self, event: Received) -> Key | None:
        """Check one event; return its key when it is the first arrival of a
        well-formed order event of this connection's user, else None."""
        self.frames += 1
        if event.user_id != self.user_id:
            self.wrong_user += 1
            self._example(f"WRONG USER: got {event.user_id}'s event {event.event_id}")
            return None
        if event.event_id in self.event_ids:
            self.duplicates += 1
            self._example(f"DUPLICATED: event {event.event_id} ({event.type}) twice")
            return None
        self.event_ids.add(event.event_id)
        key = event.key
        if key is None:
            return None
        order_id, version = key
        last = self.last_version.get(order_id)
        if last is not None and version <= last:
            self.out_of_order += 1
            self._example(f"OUT OF ORDER: {order_id} v{version} after v{last}")
        else:
            self.last_version[order_id] = version
        if key in self.arrivals:
            return None  # another event id for a version already seen: out of order above
        return key

    def repeat(self, cursor: str, event_id: str) -> None:
        """An event frame whose cursor was not after the last one held:
        dropped by the client's dedupe rule, never shown."""
        self.repeats += 1
        self._example(f"REPEAT: event {event_id} again at cursor {cursor}")

    def wrong_welcome(self, user_id: str) -> None:
        """The server welcomed this connection as somebody else."""
        self.wrong_user += 1
        self._example(f"WRONG USER: welcomed as {user_id!r}")

    def bad_frame(self, detail: str) -> None:
        self.bad_frames += 1
        self._example(f"BAD FRAME: {detail}")


class Ledger:
    """Expectations per user, logs per connection, and the running totals."""

    def __init__(self) -> None:
        self.expected: dict[str, dict[Key, int | None]] = {}  # user -> key -> sent_ns
        self.logs: list[ConnectionLog] = []
        self._by_user: dict[str, list[ConnectionLog]] = {}
        self.expected_total = 0  # over attached connections
        self.matched_total = 0
        self.latencies_ns: list[int] = []
        self.first_arrival_ns: int | None = None
        self.last_arrival_ns: int | None = None
        self.sending_done = False
        self.complete = asyncio.Event()

    # -- connections -------------------------------------------------------

    def add_log(self, log: ConnectionLog) -> None:
        self.logs.append(log)
        self._by_user.setdefault(log.user_id, []).append(log)

    def attach(self, log: ConnectionLog) -> None:
        """The connection is open: from now on it counts towards the totals."""
        if log.attached:
            return
        log.attached = True
        for key, sent_ns in self.expected.get(log.user_id, {}).items():
            self.expected_total += 1
            arrival = log.arrivals.get(key)
            if arrival is not None:
                self._match(log, arrival, sent_ns)
        self._check()

    def attached_logs(self) -> list[ConnectionLog]:
        return [log for log in self.logs if log.attached]

    # -- expectations and arrivals ----------------------------------------

    def expect(self, user_id: str, key: Key, sent_ns: int | None = None) -> None:
        """`user_id`'s connections must each receive order event `key`.

        `sent_ns` is when its cause was sent (wall clock, ns), for events that
        do not carry `loadtest_sent_ns` themselves (an order placed over HTTP).
        """
        keys = self.expected.setdefault(user_id, {})
        if key in keys:
            return
        keys[key] = sent_ns
        for log in self._by_user.get(user_id, ()):
            if not log.attached:
                continue
            self.expected_total += 1
            arrival = log.arrivals.get(key)
            if arrival is not None:
                self._match(log, arrival, sent_ns)
        self._check()

    def expect_many(self, user_id: str, keys: Iterable[Key]) -> None:
        for key in keys:
            self.expect(user_id, key)

    def observe(self, log: ConnectionLog, event: Received, recv_ns: int) -> None:
        """One event frame, as `log`'s connection received it at `recv_ns`."""
        key = log.observe(event)
        if key is None:
            return
        log.arrivals[key] = recv_ns
        expected = self.expected.get(log.user_id)
        if log.attached and expected is not None and key in expected:
            sent_ns = event.sent_ns if event.sent_ns is not None else expected[key]
            self._match(log, recv_ns, sent_ns)
            self._check()

    def _match(self, log: ConnectionLog, recv_ns: int, sent_ns: int | None) -> None:
        log.matched += 1
        self.matched_total += 1
        if sent_ns is not None:
            self.latencies_ns.append(recv_ns - sent_ns)
        if self.first_arrival_ns is None or recv_ns < self.first_arrival_ns:
            self.first_arrival_ns = recv_ns
        if self.last_arrival_ns is None or recv_ns > self.last_arrival_ns:
            self.last_arrival_ns = recv_ns

    def finish_sending(self) -> None:
        """No expectation will be added any more: completion can be declared."""
        self.sending_done = True
        self._check()

    def _check(self) -> None:
        if self.sending_done and self.matched_total >= self.expected_total:
            self.complete.set()

    # -- figures -----------------------------------------------------------

    def lost(self) -> int:
        return self.expected_total - self.matched_total

    def lost_examples(self, limit: int = EXAMPLES_MAX) -> list[str]:
        out: list[str] = []
        for log in self.attached_logs():
            for key in self.expected.get(log.user_id, {}):
                if key not in log.arrivals:
                    out.append(f"connection {log.index} ({log.user_id}): LOST {key[0]} v{key[1]}")
                    if len(out) >= limit:
                        return out
        return out
