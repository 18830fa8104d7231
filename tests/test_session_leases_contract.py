"""The `SessionLeases` contract (route leases: which instances a user's
events are routed to), run against every implementation: memory and real
Redis; and their one owner, `gateway/route_leases.py`, over each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.hub import Connection, Hub
from gateway.metrics import GatewayMetrics
from gateway.route_leases import RouteLeases
from tests.backends import SESSION_BACKENDS
from tests.sessions_support import InstanceFactory, instances, locate, order_event


@pytest.fixture(params=SESSION_BACKENDS)
async def make_instance(request: pytest.FixtureRequest) -> AsyncIterator[InstanceFactory]:
    """Instances sharing one backend, isolated from other tests by name."""
    async for factory in instances(request.param):
        yield factory


async def test_events_are_routed_to_the_instances_holding_the_user(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    await b.store.add_session("bob")
    await a.store.add_session("alice")
    located = await locate(a.store, ["bob", "alice", "carol"])
    assert located == {"bob": {"b"}, "alice": {"a"}, "carol": set()}

    for_bob = order_event("bob", "o1", 1)
    for_alice = order_event("alice", "o2", 1)
    returned = await a.store.publish([for_bob, for_alice])
    assert {d.user_id for d in returned} == {"bob", "alice"}
    await b.wait_received(1)
    await asyncio.sleep(0.2)  # anything wrongly routed would arrive by now
    assert [d.event.event_id for d in b.received] == [for_bob.event.event_id]
    assert b.received[0].cursor == next(d.cursor for d in returned if d.user_id == "bob")
    assert a.received == []  # an instance never routes to itself


async def test_removed_sessions_and_silent_instances_are_no_longer_routed(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b", lease_ttl_s=1.0)
    c = await make_instance("c", lease_ttl_s=1.0)
    await b.store.add_session("bob")
    await b.store.add_session("carol")
    await c.store.add_session("dave")
    await b.store.remove_session("bob")
    assert (await locate(a.store, ["bob"]))["bob"] == set()
    await asyncio.sleep(0.6)
    await c.store.refresh_leases(["dave"])  # c beats, b does not (as if killed)
    await asyncio.sleep(0.6)  # past b's lease, within c's refreshed one
    located = await locate(a.store, ["carol", "dave"])
    assert located == {"carol": set(), "dave": {"c"}}
    await a.store.publish([order_event("bob", "o1", 1), order_event("carol", "o2", 1)])
    await asyncio.sleep(0.3)
    assert b.received == []
    # b comes back (a stall, not a death): its sessions count again.
    await b.store.refresh_leases(["carol"])
    assert (await locate(a.store, ["carol"]))["carol"] == {"b"}
    await a.store.publish([order_event("carol", "o3", 1)])
    await b.wait_received(1)


async def test_stopped_instance_drops_its_leases(make_instance: InstanceFactory) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    await b.store.add_session("bob")
    await b.store.stop()
    assert (await locate(a.store, ["bob"]))["bob"] == set()


async def test_a_users_lease_is_taken_on_the_first_socket_and_dropped_with_the_last(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    hub = Hub(GatewayMetrics())
    leases = RouteLeases(hub, b.store)
    metrics = GatewayMetrics()
    first, second = (Connection("bob", f"c{n}", 10, metrics) for n in (1, 2))
    async with leases.holding(first):
        assert await locate(a.store, ["bob"]) == {"bob": {"b"}}
        async with leases.holding(second):
            assert set(hub.user_ids()) == {"bob"} and hub.connection_count() == 2
        # One socket of bob's is still here: still routed to.
        assert await locate(a.store, ["bob"]) == {"bob": {"b"}}
        await a.store.publish([order_event("bob", "o1", 1)])
        await b.wait_received(1)
    assert hub.connection_count() == 0
    assert await locate(a.store, ["bob"]) == {"bob": set()}


async def test_a_failing_block_still_drops_the_socket_and_its_lease(
    make_instance: InstanceFactory,
) -> None:
    a = await make_instance("a")
    b = await make_instance("b")
    hub = Hub(GatewayMetrics())
    leases = RouteLeases(hub, b.store)
    with pytest.raises(RuntimeError):
        async with leases.holding(Connection("bob", "c1", 10, GatewayMetrics())):
            raise RuntimeError("the conversation failed")
    assert hub.connection_count() == 0
    assert await locate(a.store, ["bob"]) == {"bob": set()}


async def test_a_heartbeat_holds_exactly_the_hubs_users(make_instance: InstanceFactory) -> None:
    a = await make_instance("a")
    b = await make_instance("b", lease_ttl_s=1.0)
    hub = Hub(GatewayMetrics())
    leases = RouteLeases(hub, b.store)
    async with leases.holding(Connection("bob", "c1", 10, GatewayMetrics())):
        # Past the lease TTL only with the beats: bob stays routed to.
        for _ in range(4):
            await asyncio.sleep(0.4)
            await leases.refresh()
        assert await locate(a.store, ["bob"]) == {"bob": {"b"}}
