"""A saga service whose outputs the broker keeps refusing never stalls.

Real Kafka: the `orders` topic of this test takes records of at most 4 KiB
(`max.message.bytes`), so the order service's `order.pending` for an order
with a huge item list is refused by the broker every time (not an outage).
The batch is handled one input at a time; the refused input is set aside
on the dead-letter topic with its offset, and the orders behind it on the
same partition go through, each once.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from backend_stubs.order import OrderService
from backend_stubs.runner import ServiceRunner, derived_event_id
from backend_stubs.store import Store
from orderpush_core.bus import OutgoingRecord, Record
from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.events import DEAD_LETTER_TOPIC, decode_event, encode_event, make_event
from tests.backends import KAFKA_BOOTSTRAP, unique
from tests.stubs_support import eventually, read_topic

pytestmark = [pytest.mark.kafka]


def authorized(order_id: str, items: list[dict[str, Any]]) -> Any:
    data = {"items": items, "amount_cents": 500, "currency": "EUR", "card_last4": "4242"}
    return make_event("payment.authorized", order_id=order_id, user_id="alice", data=data)


async def test_an_input_whose_outputs_are_refused_is_set_aside_and_the_rest_goes_on() -> None:
    prefix = unique("ps")
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(f"{prefix}orders", 4, 1, topic_configs={"max.message.bytes": "4096"})]
        )
    finally:
        await admin.close()
    bus = KafkaEventBus(KAFKA_BOOTSTRAP, topic_prefix=prefix)
    await bus.start()
    runner = ServiceRunner(bus, OrderService(Store()), group=f"{prefix}order", poll_timeout_ms=200)
    try:
        huge = authorized("ord_huge", [{"sku": "S" * 60, "qty": 1}] * 120)  # ~9 KB of items
        fine = [authorized(f"ord_{n}", [{"sku": "SKU-1", "qty": 1}]) for n in range(3)]
        # One key: one partition, the huge order first.
        await bus.publish([OutgoingRecord("payments", "k", encode_event(e)) for e in [huge, *fine]])
        await runner.start()

        def pending_of_all(got: list[Record]) -> bool:
            return {decode_event(r.value).order_id for r in got} >= {e.order_id for e in fine}

        outputs = await read_topic(bus, "orders", pending_of_all, 60)
        events = [decode_event(r.value) for r in outputs]
        assert sorted(e.event_id for e in events) == sorted(
            derived_event_id(e.event_id, "order.pending") for e in fine
        )
        letters = await read_topic(bus, DEAD_LETTER_TOPIC, lambda got: len(got) >= 1, 30)
        (letter,) = letters
        assert decode_event(letter.value).event_id == huge.event_id
        headers = dict(letter.headers)
        assert headers["x-orderpush-reason"].startswith(b"outputs refused: BusError"), headers
        assert b"TooLarge" in headers["x-orderpush-reason"], headers

        async def counted() -> bool | None:
            return True if runner.stats.refused == 1 else None

        await eventually(counted, 10)
    finally:
        await runner.stop()
        await bus.stop()
