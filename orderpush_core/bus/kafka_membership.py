"""Static group membership (KIP-345) for aiokafka consumers, with a leave.

A static member joins under a `group.instance.id` that outlives the process.
When a member is killed and a process with the same instance id joins again,
the group coordinator hands the newcomer the dead member's place and its
partitions at once: no rebalance, no wait for the dead member's session to
time out. A dynamic member (no instance id) is a stranger to the group after a
restart, so the group waits out the dead member's session before it can
assign anything.

aiokafka 0.14 never sends a LeaveGroup for a static member (the Java client
does not either: a static member is expected back). A gateway that stops on
purpose (SIGTERM drain, a rejoin after an error, shutdown) must leave, though:
otherwise its partitions sit unread for a whole session timeout. `leave_on_close`
makes the consumer's close send the LeaveGroup that a dynamic member sends.
The request names the member id only (LeaveGroup v0/v1, the versions aiokafka
speaks); the broker removes the member and its instance id mapping and
rebalances the rest of the group at once.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterable
from typing import Any

from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

#: What Kafka accepts in a group.instance.id (as in a topic name).
_ILLEGAL = re.compile(r"[^a-zA-Z0-9._-]")
_MAX_ID = 249


def instance_id_for(name: str, wire_topics: Iterable[str]) -> str:
    """The group.instance.id of a member named `name` reading `wire_topics`.

    The topics are part of it: a static member that rejoins a stable group
    is handed its predecessor's assignment as it was, without a rebalance. A
    process that subscribes to other topics than its predecessor (an upgrade
    that adds or drops one) would get partitions it does not read (aiokafka
    refuses them and the consumer fails) or miss the new ones; under another
    id it joins as a new member and the group rebalances. Characters Kafka
    refuses are replaced; the digest (of the exact name and topics) keeps two
    names that differ only in those apart.
    """
    topics = ",".join(sorted(wire_topics))
    digest = f"{zlib.crc32(f'{name}|{topics}'.encode()):08x}"
    return f"{_ILLEGAL.sub('_', name)[: _MAX_ID - len(digest) - 1]}.{digest}"


def leave_on_close(consumer: Any) -> None:
    """Make a started AIOKafkaConsumer leave its group when it is stopped,
    even as a static member. A no-op before the consumer's coordinator exists
    (nothing joined yet, so nothing to leave)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "_orderpush_leaves", False):
        return

    async def leave() -> None:
        # What aiokafka's GroupCoordinator._maybe_leave_group does for a
        # dynamic member: one attempt, never retried (the session timeout is
        # the fallback), then forget the generation.
        if coordinator.generation > 0 and coordinator.member_id:
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            try:
                response = await coordinator._send_req(request)
            except KafkaError as exc:
                log.warning("kafka: leaving group %s failed: %r", coordinator.group_id, exc)
            else:
                error = for_code(response.error_code)
                if response.error_code:
                    log.warning("kafka: leaving group %s: %s", coordinator.group_id, error.__name__)
                else:
                    log.info(
                        "kafka: static member %s left group %s",
                        coordinator._group_instance_id,
                        coordinator.group_id,
                    )
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave
    coordinator._orderpush_leaves = True
