"""Static group membership of named consumers, against the real broker.

A gateway's consumer joins as a static member under its instance id
(`orderpush_core/bus/kafka_membership.py`): a process killed and started
again under the same id takes its place back without a rebalance, and one
that stops on purpose still leaves the group at once (aiokafka alone would
not send the LeaveGroup of a static member).

The members here use a session timeout far longer than any wait of the
tests: a member that were not recognised, or that did not leave, would hold
its partitions for that long, and the bounded waits would fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.bus.kafka_membership import instance_id_for
from tests.backends import KAFKA_BOOTSTRAP, unique

pytestmark = pytest.mark.kafka

#: Longer than every bounded wait below (and allowed by the broker's
#: group.max.session.timeout.ms, 30 min by default).
LONG_SESSION_MS = 60_000
WAIT_S = 30.0

#: One group member in a process of its own: joins, prints its generation and
#: assignment as a JSON line, then holds its place until killed.
MEMBER = textwrap.dedent(
    """
    import asyncio, json, sys
    from orderpush_core.bus.kafka import KafkaEventBus

    async def main() -> None:
        prefix, group, name, session_ms = sys.argv[1:5]
        bus = KafkaEventBus(
            sys.argv[5], prefix, session_timeout_ms=int(session_ms), static_members=True
        )
        await bus.start()
        consumer = await bus.consumer(["orders"], group, client_id=name)
        coordinator = consumer._consumer._coordinator
        print(json.dumps({
            "generation": coordinator.generation,
            "member_id": coordinator.member_id,
            "partitions": sorted(tp.partition for tp in consumer.assignment()),
        }), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


class Member:
    """A member process (see MEMBER)."""

    def __init__(self, prefix: str, group: str, name: str) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-c", MEMBER, prefix, group, name),
                *(str(LONG_SESSION_MS), KAFKA_BOOTSTRAP),
            ],
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )

    async def joined(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), WAIT_S)
        assert line, f"the member exited ({self.process.poll()}) before joining"
        joined: dict[str, Any] = json.loads(line)
        return joined

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
async def admin() -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await client.start()
    yield client
    await client.close()


async def members_of(admin: AIOKafkaAdminClient, group: str) -> list[Any]:
    (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.groups
    return list(described[5])  # (error, group, state, protocol type, protocol, members)


async def test_a_member_killed_and_restarted_under_its_name_keeps_its_generation() -> None:
    prefix, group, name = unique("static"), unique("g"), "gateway-a"
    first = Member(prefix, group, name)
    try:
        before = await first.joined()
    finally:
        first.kill()
    assert before["partitions"] == [0, 1, 2, 3]

    # The dead member's session has 60 s to run: only a static member that is
    # recognised under its name is assigned within the wait.
    second = Member(prefix, group, name)
    try:
        after = await second.joined()
    finally:
        second.kill()
    assert after["partitions"] == [0, 1, 2, 3]
    # It replaced the dead member in place: a new member id, no rebalance.
    assert after["member_id"] != before["member_id"]
    assert after["generation"] == before["generation"]


async def test_a_stopped_static_member_leaves_the_group_at_once(
    admin: AIOKafkaAdminClient,
) -> None:
    prefix, group = unique("static"), unique("g")
    bus = KafkaEventBus(
        KAFKA_BOOTSTRAP, prefix, session_timeout_ms=LONG_SESSION_MS, static_members=True
    )
    await bus.start()
    try:
        consumer = await bus.consumer(["orders"], group, client_id="gateway-b")
        assert consumer.group_instance_id == instance_id_for("gateway-b", [f"{prefix}orders"])
        [member] = await members_of(admin, group)
        # (member id, client id, ...): the broker names a static member's id
        # after its instance id.
        assert member[0].startswith(f"{consumer.group_instance_id}-")

        await consumer.stop()
        # Without the LeaveGroup it would stay a member for 60 s.
        assert await members_of(admin, group) == []

        # So a member of another name is assigned everything at once.
        other = await asyncio.wait_for(
            bus.consumer(["orders"], group, client_id="gateway-c"), WAIT_S
        )
        assert {tp.partition for tp in other.assignment()} == {0, 1, 2, 3}
        await other.stop()
    finally:
        await bus.stop()


async def test_only_named_plain_members_of_a_static_bus_are_static() -> None:
    prefix = unique("static")
    static_bus = KafkaEventBus(KAFKA_BOOTSTRAP, prefix, static_members=True)
    dynamic_bus = KafkaEventBus(KAFKA_BOOTSTRAP, prefix)
    await static_bus.start()
    await dynamic_bus.start()
    try:
        named = await static_bus.consumer(["orders"], unique("g"), client_id="n1")
        unnamed = await static_bus.consumer(["orders"], unique("g"))
        # A transactional member's zombie must not evict its successor.
        transactional = await static_bus.consumer(
            ["orders"], unique("g"), client_id="n2", transactional=True
        )
        plain = await dynamic_bus.consumer(["orders"], unique("g"), client_id="n3")
        assert named.group_instance_id is not None
        assert unnamed.group_instance_id is None
        assert transactional.group_instance_id is None
        assert plain.group_instance_id is None
        for consumer in (named, unnamed, transactional, plain):
            await consumer.stop()
    finally:
        await static_bus.stop()
        await dynamic_bus.stop()


def test_the_instance_id_is_legal_for_kafka_and_depends_on_the_topics() -> None:
    one = instance_id_for("host:7/w0 ü", ["p.orders", "p.billing"])
    assert one.startswith("host_7_w0__.")
    assert all(c.isalnum() or c in "._-" for c in one)
    # The order of the topics does not matter; the set does.
    assert one == instance_id_for("host:7/w0 ü", ["p.billing", "p.orders"])
    assert one != instance_id_for("host:7/w0 ü", ["p.orders"])
    # Names that only differ in refused characters stay apart.
    assert instance_id_for("a:b", ["t"]) != instance_id_for("a/b", ["t"])
    assert len(instance_id_for("x" * 400, ["t"])) == 249
