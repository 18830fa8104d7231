"""Shared parts of the fault tests (tests/test_faults_*.py); no tests here.

A `Feed` makes one user's events over a few orders (so they spread over
partitions) and remembers what was produced; a `Subscriber` is a WebSocket
client that runs in the background the way a browser does: it keeps the last
cursor it saw and, when its connection drops, reconnects (to the next address
it knows) with that cursor. `check_exactly_once` is the verdict of a fault
test: every produced event arrived, once, each order in version order, and
the cursors only ever went forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from gateway.drain import retry_after_ms
from gateway.sessions.base import cursor_key
from orderpush_core.auth import issue_token
from orderpush_core.bus import BusError, OutgoingRecord
from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.events import TOPIC_OF_TYPE, Event, decode_event, encode_event, make_event

SECRET = "fault-test-secret-0123456789abcdef-0123"


def token(user: str) -> str:
    return issue_token(user, SECRET)


class Feed:
    """One user's order events: each call to `next` bumps one order's version,
    going round the orders, so several partitions carry the user's events."""

    def __init__(self, user: str, orders: int = 3) -> None:
        self.user = user
        self.orders = [f"ord-{user}-{n}" for n in range(orders)]
        self._versions = dict.fromkeys(self.orders, 0)
        self.produced: list[Event] = []

    def next(self) -> Event:
        order = self.orders[len(self.produced) % len(self.orders)]
        self._versions[order] += 1
        version = self._versions[order]
        status = "pending" if version == 1 else "confirmed"
        event = make_event(
            f"order.{status}",
            order_id=order,
            user_id=self.user,
            status=status,
            version=version,
            data={"seq": len(self.produced)},
        )
        self.produced.append(event)
        return event

    def take(self, count: int) -> list[Event]:
        return [self.next() for _ in range(count)]


def record(event: Event) -> OutgoingRecord:
    return OutgoingRecord(TOPIC_OF_TYPE[event.type], event.order_id, encode_event(event))


async def publish(bus: KafkaEventBus, events: Sequence[Event], timeout_s: float = 90) -> int:
    """Produce until the broker acknowledged every event; returns the number of
    failed attempts. A retried attempt may land a record twice: the gateway
    must drop the second copy (same event_id)."""
    failures = 0
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await bus.publish([record(e) for e in events])
                return failures
            except BusError:
                failures += 1
                await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def producer(bootstrap: str, prefix: str) -> AsyncIterator[KafkaEventBus]:
    bus = KafkaEventBus(bootstrap, topic_prefix=prefix)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


@dataclass
class Subscriber:
    """A resuming WebSocket client of one user, running in the background."""

    user: str
    addrs: Sequence[str]
    #: Drop an order.* event whose version is not newer than the one shown, as
    #: docs/protocol.md asks of clients (a resume may repeat what arrived out of
    #: cursor order); without it, every repeat counts as a delivery.
    drop_stale: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Events dropped by `drop_stale`.
    stale: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None
    connects: int = 0
    snapshots: int = 0
    resumes: int = 0
    #: (address, close code or error) of every connection that ended.
    ended: list[tuple[str, str]] = field(default_factory=list)
    #: When each connection ended (monotonic), and the close reason it gave.
    ended_at: list[float] = field(default_factory=list)
    close_reasons: list[str] = field(default_factory=list)
    #: When each event_id first arrived (monotonic).
    arrived_at: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _versions: dict[str, int] = field(default_factory=dict)
    _ws: Any = None

    async def drop(self) -> None:
        """Close the current connection from this side (a network blip); the
        client reconnects with its cursor as it does after any close."""
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        attempt = 0
        while True:
            addr = self.addrs[attempt % len(self.addrs)]
            attempt += 1
            wait_s = 0.2
            try:
                await self._session(addr)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.ended.append((addr, repr(exc)))
                self.ended_at.append(time.monotonic())
                self.close_reasons.append("")
            else:
                # As the JS client does: a draining server says when to come back.
                hinted = retry_after_ms(self.close_reasons[-1])
                wait_s = hinted / 1000 if hinted is not None else wait_s
            self._changed.set()
            await asyncio.sleep(wait_s)

    async def _session(self, addr: str) -> None:
        async with websockets.connect(f"ws://{addr}/ws", open_timeout=5) as ws:
            self._ws = ws
            auth: dict[str, Any] = {"type": "auth", "token": token(self.user)}
            if self.cursor is not None:
                auth["cursor"] = self.cursor
            await ws.send(json.dumps(auth))
            self.connects += 1
            try:
                async for data in ws:
                    message = json.loads(data)
                    kind = message["type"]
                    if kind == "event":
                        self._on_event(message)
                    elif kind == "snapshot":
                        self.snapshots += 1
                    elif kind == "resumed":
                        self.resumes += 1
                    if kind in ("event", "snapshot", "resumed"):
                        # What the JS client does: resume from the last cursor seen.
                        self.cursor = message["cursor"]
                    self._changed.set()
            except websockets.ConnectionClosed:
                pass
            self.ended.append((addr, f"closed {ws.close_code}"))
            self.ended_at.append(time.monotonic())
            self.close_reasons.append(ws.close_reason or "")

    def _on_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        self.arrived_at.setdefault(event["event_id"], time.monotonic())
        if self.drop_stale and event["type"].startswith("order."):
            shown = self._versions.get(event["order_id"], 0)
            if event["version"] <= shown:
                self.stale.append(message)
                return
            self._versions[event["order_id"]] = event["version"]
        self.events.append(message)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"subscriber-{self.user}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_until(self, what: str, done: Any, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.user}: no {what} within {timeout_s}s: {len(self.events)} events, "
                f"{self.connects} connects, ended {self.ended[-5:]}"
            ) from None

    async def wait_ready(self, timeout_s: float = 15) -> None:
        """Until the first connection got its snapshot (live from then on)."""
        await self.wait_until("snapshot", lambda: self.snapshots >= 1, timeout_s)

    async def wait_events(self, count: int, timeout_s: float) -> None:
        await self.wait_until(f"{count} events", lambda: len(self.events) >= count, timeout_s)


@contextlib.asynccontextmanager
async def subscribed(user: str, *addrs: str) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(user, addrs)
    subscriber.start()
    try:
        await subscriber.wait_ready()
        yield subscriber
    finally:
        await subscriber.stop()


def check_exactly_once(received: Sequence[dict[str, Any]], produced: Sequence[Event]) -> None:
    """Every produced event once, each order's events in version order, and
    the user's cursors strictly increasing throughout (gap-free cursors: a
    connection never sends N+1 before N, whichever instances appended them)."""
    ids = [m["event"]["event_id"] for m in received]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"delivered more than once: {duplicates}"
    missing = [(e.order_id, e.version) for e in produced if e.event_id not in set(ids)]
    assert not missing, f"never delivered: {missing}"
    assert set(ids) == {e.event_id for e in produced}, "delivered events nobody produced"
    per_order: dict[str, list[dict[str, Any]]] = {}
    for message in received:
        per_order.setdefault(message["event"]["order_id"], []).append(message)
    for order, messages in per_order.items():
        versions = [m["event"]["version"] for m in messages]
        assert versions == list(range(1, len(versions) + 1)), (order, versions)
    cursors = [cursor_key(m["cursor"]) for m in received]
    assert all(a < b for a, b in itertools.pairwise(cursors)), (
        f"cursors went backwards: {[m['cursor'] for m in received]}"
    )


async def history_event_ids(redis_url: str, key_prefix: str, user: str) -> list[str]:
    """The event ids in the user's replay history, oldest first."""
    client = Redis.from_url(redis_url)
    try:
        entries: Any = await client.xrange(f"{key_prefix}:{{{user}}}:h")
    finally:
        await client.aclose()
    return [decode_event(fields[b"raw"]).event_id for _, fields in entries]


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offset per (wire topic, partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def committed_total(bootstrap: str, group: str) -> int:
    return sum(max(0, offset) for offset in (await committed_offsets(bootstrap, group)).values())


async def poll_until(what: str, check: Any, timeout_s: float, every_s: float = 0.25) -> Any:
    """Await `check()` until it returns something truthy; that is returned."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await check()
                if last:
                    return last
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s}s (last: {last!r})") from None


#: An event that reaches its client later than this after it was produced
#: counts as late: its client was not current meanwhile.
LATE_S = 1.0


@dataclass
class Figures:
    """What a fault did to the clients, for the report (never asserted on
    timing: figures go to the report, see TEAM.md)."""

    fault: str
    events: int
    in_flight: int
    lost: int
    shown_twice: int
    max_delay_s: float
    current_after_s: float

    def line(self) -> str:
        return (
            f"FIGURES {self.fault}: events {self.events}, in flight {self.in_flight}, "
            f"lost {self.lost}, shown twice {self.shown_twice}, max delay {self.max_delay_s:.2f}s, "
            f"every client current {self.current_after_s:.2f}s after the fault"
        )


def figures(
    fault: str,
    subscribers: Sequence[Subscriber],
    feeds: Sequence[Feed],
    produced_at: dict[str, float],
    fault_at: float,
) -> Figures:
    """Lost, shown twice and lateness over every client. `produced_at` maps
    event ids to when the broker acknowledged them (monotonic)."""
    lost = twice = 0
    max_delay_s = 0.0
    last_late = fault_at
    for sub, feed in zip(subscribers, feeds, strict=True):
        ids = [m["event"]["event_id"] for m in sub.events]
        twice += len(ids) - len(set(ids))
        for event in feed.produced:
            arrived = sub.arrived_at.get(event.event_id)
            if arrived is None:
                lost += 1
                continue
            delay_s = arrived - produced_at[event.event_id]
            max_delay_s = max(max_delay_s, delay_s)
            if delay_s > LATE_S:
                last_late = max(last_late, arrived)
    current_after_s = last_late - fault_at
    in_flight = sum(
        1 for at in produced_at.values() if fault_at <= at <= fault_at + max(current_after_s, 0)
    )
    return Figures(
        fault,
        sum(len(f.produced) for f in feeds),
        in_flight,
        lost,
        twice,
        max_delay_s,
        current_after_s,
    )
