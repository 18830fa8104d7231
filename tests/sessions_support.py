"""What the session store contract suites share: instances over one backend
(memory or real Redis), isolated by a unique name, and the events they use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import TypedDict, Unpack

from gateway.sessions import Delivery, Envelope, SessionStore, open_sessions
from gateway.sessions.memory import MemorySessionStore
from gateway.sessions.redis import RedisSessionStore
from orderpush_core.events import Event, encode_event, make_event
from tests.backends import sessions_url, unique


class Instance:
    """A store plus what other instances routed to it."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.received: list[Delivery] = []

    def deliver(self, batch: Sequence[Delivery]) -> None:
        self.received.extend(batch)

    async def wait_received(self, count: int, timeout_s: float = 5.0) -> None:
        async def loop() -> None:
            while len(self.received) < count:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(loop(), timeout_s)


InstanceFactory = Callable[..., Awaitable[Instance]]


class StoreOptions(TypedDict, total=False):
    """The keywords of `open_sessions` a test may set."""

    history_max: int
    lease_ttl_s: float
    history_idle_s: float


async def instances(backend: str) -> AsyncIterator[InstanceFactory]:
    """A factory of instances sharing one backend, stopped afterwards."""
    name = unique("t")
    started: list[Instance] = []

    async def factory(instance_id: str, **options: Unpack[StoreOptions]) -> Instance:
        store = open_sessions(sessions_url(backend, name), instance_id, key_prefix=name, **options)
        instance = Instance(store)
        await store.start(instance.deliver)
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        await instance.store.stop()


async def locate(store: SessionStore, user_ids: Collection[str]) -> dict[str, set[str]]:
    """For each user, the live instances holding a route lease of the user.

    Only tests ask this, so it is no part of the `SessionLeases` interface:
    each implementation has its own `locate`."""
    if isinstance(store, MemorySessionStore | RedisSessionStore):
        return await store.locate(user_ids)
    raise TypeError(f"no locate for {type(store).__name__}")


def incoming(event: Event) -> Envelope:
    return Envelope(event=event, raw=encode_event(event), produced_ms=0)


def order_event(user: str, order: str, version: int, status: str = "pending") -> Envelope:
    return incoming(
        make_event(f"order.{status}", order_id=order, user_id=user, status=status, version=version)
    )
