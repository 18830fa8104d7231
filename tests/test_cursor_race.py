"""The resume race, forced: two instances append two events of one user,
their routes reach the socket in the opposite order, and the client is cut
and resumed (on the other instance) in between. Many times, on the
in-memory store and on Redis.

Gap-free cursors make this safe: the socket never gets N+1 before N (an
event that comes early waits for its predecessor, or the gap is filled from
history), so the client's last cursor means "everything up to here" and a
resume from it neither skips nor repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.hub import GAP_WAIT_S
from gateway.metrics import current
from gateway.sessions import Delivery, Envelope
from gateway.settings import Settings
from orderpush.apps import gateway_app
from orderpush_core.events import Event, encode_event
from tests.backends import KAFKA_BOOTSTRAP, SESSION_BACKENDS, sessions_url, unique
from tests.faults import SECRET, Feed, Subscriber, check_exactly_once, producer, publish
from tests.harness import serve
from tests.processes import PrivateRedis

USERS = 8
ROUNDS = 25
#: Route delays drawn per event: none, shorter than the gap wait, longer.
DELAYS_S = (0.0, 0.0, 0.03, 0.08, GAP_WAIT_S + 0.15)


@dataclass
class Instance:
    gateway: Gateway
    addr: str
    #: event_id -> how long its deliveries are held before reaching the hub
    delays: dict[str, float]

    def hand_over(self, deliveries: Sequence[Delivery]) -> None:
        """What reaches this instance's hub (routed or its own), each delivery
        after its event's delay: routes of one user overtake each other."""
        loop = asyncio.get_running_loop()
        for delivery in deliveries:
            delay_s = self.delays.get(delivery.event.event_id, 0.0)
            if delay_s:
                loop.call_later(delay_s, self._real_deliver, [delivery])
            else:
                self._real_deliver([delivery])

    def _real_deliver(self, batch: Sequence[Delivery]) -> None:
        type(self.gateway.hub).deliver(self.gateway.hub, batch)

    async def append(self, event: Event) -> None:
        """What the pump does with a record it read: append + route, hand on."""
        item = Envelope(event=event, raw=encode_event(event), produced_ms=0)
        self.hand_over(await self.gateway.store.publish([item]))


@contextlib.asynccontextmanager
async def two_instances(backend: str) -> AsyncIterator[tuple[Instance, Instance]]:
    name = unique("race")
    delays: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        instances = []
        for n in (1, 2):
            settings = Settings(
                sessions_url=sessions_url(backend, name),
                session_key_prefix=name,
                instance_id=f"{name}-{n}",
                jwt_secret=SECRET,
            )
            app = gateway_app(settings)
            gateway: Gateway = app.state.gateway
            instance = Instance(gateway, "", delays)
            # Routed deliveries come through the same delaying hand-over.
            gateway.hub.deliver = instance.hand_over  # type: ignore[method-assign]
            instance.addr = await stack.enter_async_context(serve(app))
            instances.append(instance)
        yield instances[0], instances[1]


@pytest.mark.parametrize(
    "backend",
    [pytest.param(b, marks=[pytest.mark.redis] if b == "redis" else []) for b in SESSION_BACKENDS],
)
async def test_routes_overtaking_each_other_around_a_resume_lose_and_repeat_nothing(
    backend: str,
) -> None:
    rng = random.Random(8)
    async with two_instances(backend) as (one, two):
        feeds = [Feed(unique("u")) for _ in range(USERS)]
        subscribers = [Subscriber(feed.user, [one.addr, two.addr]) for feed in feeds]
        for subscriber in subscribers:
            subscriber.start()
        try:
            for subscriber in subscribers:
                await subscriber.wait_ready()

            async def race(feed: Feed, subscriber: Subscriber) -> None:
                for _ in range(ROUNDS):
                    first, second = feed.next(), feed.next()
                    slow, fast = rng.sample(DELAYS_S, 2)
                    # Opposite orders, both ways round: the older event's
                    # route is the slow one, or the newer one's is.
                    one.delays[first.event_id] = max(slow, fast)
                    one.delays[second.event_id] = min(slow, fast)
                    if rng.random() < 0.5:
                        one.delays[first.event_id], one.delays[second.event_id] = (
                            one.delays[second.event_id],
                            one.delays[first.event_id],
                        )
                    appenders = [one, two]
                    rng.shuffle(appenders)
                    await appenders[0].append(first)
                    await appenders[1].append(second)
                    if rng.random() < 0.5:
                        # Cut the client while a route is in flight; it
                        # resumes from its last cursor on the other instance.
                        await asyncio.sleep(rng.uniform(0.0, max(slow, fast)))
                        await subscriber.drop()
                    await asyncio.sleep(rng.uniform(0.0, 0.1))

            await asyncio.wait_for(
                asyncio.gather(*(race(f, s) for f, s in zip(feeds, subscribers, strict=True))),
                ROUNDS * 2.0,
            )
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                await subscriber.wait_events(len(feed.produced), 20)
            await asyncio.sleep(GAP_WAIT_S + 0.5)  # nothing more may come: no late repeats
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                check_exactly_once(subscriber.events, feed.produced)
            reconnects = sum(s.connects - 1 for s in subscribers)
            # About half the rounds cut the client; a cut that lands while it
            # is still reconnecting from the last one does not count.
            assert reconnects >= USERS * ROUNDS // 10, "the race was not forced often enough"
            fills = sum(current(i.gateway.metrics.cursor_gap_fills) for i in (one, two))
            print(
                f"\n{backend}: {USERS * ROUNDS} races, {reconnects} cuts and resumes, "
                f"{sum(len(f.produced) for f in feeds)} events, lost 0, shown twice 0, "
                f"regressions 0; {fills:.0f} gaps filled from history after the wait"
            )
            # Every reconnect resumed from its cursor: never a snapshot.
            assert all(s.snapshots == 1 for s in subscribers)
        finally:
            for subscriber in subscribers:
                await subscriber.stop()


FREEZE_USERS = 24
FREEZE_S = 15.0


@pytest.mark.kafka
@pytest.mark.redis
async def test_redis_frozen_while_clients_reconnect_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Two gateways on Kafka and a private Redis; users reconnect every 1-4 s,
    alternating gateways, while orders flow. Redis is frozen (SIGSTOP) for
    15 s in the middle. Every event reaches its user once, in cursor order."""
    rng = random.Random(15)
    prefix = unique("frz")
    with PrivateRedis(tmp_path / "redis", persistent=False).running() as redis:
        async with contextlib.AsyncExitStack() as stack:
            addrs = []
            for n in (1, 2):
                settings = Settings(
                    bus_url=f"kafka://{KAFKA_BOOTSTRAP}",
                    sessions_url=redis.url,
                    topic_prefix=prefix,
                    session_key_prefix=prefix,
                    instance_id=f"{prefix}-{n}",
                    jwt_secret=SECRET,
                )
                addrs.append(await stack.enter_async_context(serve(gateway_app(settings))))
            bus = await stack.enter_async_context(producer(KAFKA_BOOTSTRAP, prefix))
            feeds = [Feed(unique("f")) for _ in range(FREEZE_USERS)]
            subscribers = [
                Subscriber(feed.user, addrs if n % 2 else addrs[::-1])
                for n, feed in enumerate(feeds)
            ]
            for subscriber in subscribers:
                subscriber.start()

            async def stop_all() -> None:
                for subscriber in subscribers:
                    await subscriber.stop()

            stack.push_async_callback(stop_all)
            for subscriber in subscribers:
                await subscriber.wait_ready(30)

            async def churn(subscriber: Subscriber) -> None:
                while True:
                    await asyncio.sleep(rng.uniform(1.0, 4.0))
                    await subscriber.drop()

            async def produce(duration_s: float) -> None:
                deadline = time.monotonic() + duration_s
                while time.monotonic() < deadline:
                    # Three events per user, one per order: three partitions,
                    # so both gateways append events of one user at once.
                    chosen = rng.sample(feeds, 6)
                    await publish(bus, [feed.next() for feed in chosen for _ in range(3)])
                    await asyncio.sleep(0.25)

            churners = [asyncio.create_task(churn(s)) for s in subscribers]
            try:
                await produce(8.0)
                connects_before = sum(s.connects for s in subscribers)
                produced_before = sum(len(feed.produced) for feed in feeds)
                redis.pause()
                try:
                    await produce(FREEZE_S)
                finally:
                    redis.resume()
                thawed_at = time.monotonic()
                in_flight = sum(len(feed.produced) for feed in feeds)
                before_thaw = [{e.event_id for e in feed.produced} for feed in feeds]

                async def caught_up() -> float:
                    """Seconds from the thaw until every client had what was
                    produced before it."""
                    while not all(
                        ids <= {m["event"]["event_id"] for m in sub.events}
                        for ids, sub in zip(before_thaw, subscribers, strict=True)
                    ):
                        await asyncio.sleep(0.1)
                    return time.monotonic() - thawed_at

                catching_up = asyncio.create_task(caught_up())
                await produce(8.0)
            finally:
                for task in churners:
                    task.cancel()
                await asyncio.gather(*churners, return_exceptions=True)
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                await subscriber.wait_events(len(feed.produced), 45)
            current_s = await asyncio.wait_for(catching_up, 5)
            await asyncio.sleep(GAP_WAIT_S + 1.0)  # nothing more may come
            for subscriber, feed in zip(subscribers, feeds, strict=True):
                check_exactly_once(subscriber.events, feed.produced)
            produced = sum(len(feed.produced) for feed in feeds)
            failed = sum(
                1 for s in subscribers for _, why in s.ended if why not in ("closed 1000",)
            )
            print(
                f"\nRedis frozen {FREEZE_S:.0f} s: {produced} events ({in_flight} produced before "
                f"the thaw), lost 0, shown twice 0, regressions 0; "
                f"{sum(s.connects for s in subscribers) - connects_before} connects after the "
                f"freeze began ({failed} ended otherwise than by the client); every client "
                f"had everything produced before the thaw {current_s:.1f} s after it"
            )
            # The race was there to be lost: many events while Redis was frozen.
            assert in_flight - produced_before > 200, (produced_before, in_flight)
