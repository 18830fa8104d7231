"""POST /api/orders while the Kafka broker is down (a private broker, killed).

The payment service waits a bounded time for the bus's acknowledgement
(backend_stubs/payment.py ACK_TIMEOUT_S) and answers 503 with Retry-After
instead of hanging. The order is recorded under its Idempotency-Key before
the publish, so a retry with the key, once the broker is back, sends the
same event (same order id, same event id): one order, whatever number of
attempts and whatever the first attempt's event did meanwhile (it may land
late, when aiokafka's buffered send reaches the restarted broker).

The elapsed time of each 503 is printed (`pytest ... -s`): a figure for the
report, not a pass/fail condition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orderpush_core.events import decode_event
from tests.processes import PrivateKafka
from tests.stubs_support import Shop, eventually, open_shop, order_body, read_topic

pytestmark = [pytest.mark.kafka]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path_factory.mktemp("kafka"))
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()


async def timed_place(shop: Shop, user: str, **headers: str) -> tuple[Any, float]:
    started = time.monotonic()
    answer = await shop.place(user, order_body("SKU-1"), **headers)
    return answer, time.monotonic() - started


async def test_orders_answer_503_with_retry_after_while_the_broker_is_down_and_a_keyed_retry_places_one_order(  # noqa: E501
    broker: PrivateKafka,
) -> None:
    async with open_shop("kafka", url=f"kafka://{broker.bootstrap}") as shop:
        warm = await shop.place("warm", order_body("SKU-1"), **{"Idempotency-Key": "warm"})
        assert warm.status_code == 202, warm.text

        broker.kill()
        try:
            key = {"Idempotency-Key": "checkout-1"}
            elapsed = []
            for headers in (key, {}, key):  # keyed, unkeyed, the keyed retry
                answer, took_s = await asyncio.wait_for(timed_place(shop, "carol", **headers), 10)
                elapsed.append(took_s)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "bus_unavailable"
                assert int(answer.headers["retry-after"]) >= 1
            print(f"503 answers with the broker down took {[round(s, 2) for s in elapsed]} s")
        finally:
            broker.start()

        # Back: the keyed retry completes the order recorded by the first attempt.
        async def placed() -> Any:
            answer = await shop.place("carol", order_body("SKU-1"), **key)
            return answer if answer.status_code == 202 else None

        first = await eventually(placed, 90, interval_s=0.5)
        order_id = first.json()["order_id"]
        again = await shop.place("carol", order_body("SKU-1"), **key)
        assert (again.status_code, again.json()["order_id"]) == (202, order_id)
        assert again.headers["idempotent-replayed"] == "true"

        await shop.wait_order("carol", order_id, lambda o: o["status"] == "confirmed", 90)
        # One order of the key (the unkeyed attempt may or may not have
        # landed: without a key, a 503 is not a promise either way).
        listed = (
            await shop.client.get("/api/orders", headers={"Authorization": auth_of("carol")})
        ).json()["orders"]
        keyed = [o for o in listed if o["order_id"] == order_id]
        assert len(keyed) == 1 and len(listed) <= 2, listed

        # The saga decided once: one order.pending and one order.confirmed.
        def confirmed(records: list[Any]) -> bool:
            return any(
                decode_event(r.value).type == "order.confirmed"
                and decode_event(r.value).order_id == order_id
                for r in records
            )

        records = await read_topic(shop.bus, "orders", confirmed, 60)
        mine = [decode_event(r.value) for r in records]
        mine = [e for e in mine if e.order_id == order_id]
        # One decision per step: one order.pending, one order.confirmed (by
        # event id). A transaction whose commit the broker's crash hid from
        # the order service can be sent again with the same event ids, which
        # readers drop (docs/architecture.md, "The saga's exactly-once").
        decided = {e.event_id: e.version or 0 for e in mine}
        assert sorted(decided.values()) == [1, 2], [(e.type, e.version) for e in mine]
        print(f"order events on the topic: {len(mine)} records, {len(decided)} distinct")


def auth_of(user: str) -> str:
    from tests.stubs_support import auth

    return auth(user)["Authorization"]
