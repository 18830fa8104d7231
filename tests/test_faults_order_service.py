"""The order service SIGKILLed in the middle of its transactions.

The saga runs as two `orderpush stubs` processes on the shared Kafka broker
(a unique topic prefix): one with the storefront API and the other
services, one with the order service alone, on its own data dir. Orders are
placed throughout; the order service is killed (SIGKILL: an open Kafka
transaction, maybe a SQLite commit whose Kafka commit never came) and
started again on the same data dir, twice. A new process comes back under
the same transactional id (kept in the data dir), which aborts what the old
one left open. In the second case the second fault is a zombie: the process
is frozen (SIGSTOP), a replacement started on the same data dir, then the
frozen one thawed; its next transaction is fenced and it stops consuming.

Verdict, from a `read_committed` reader of `orders` (what the gateway and
the view see): each order's events once, in version order, every order
confirmed. A FIGURES line reports the figures (`pytest ... -s`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.events import Event, decode_event
from tests.backends import KAFKA_BOOTSTRAP, unique
from tests.faults import poll_until
from tests.harness import Cluster, Process, cluster
from tests.stubs_support import SECRET, auth, order_body

pytestmark = [pytest.mark.kafka]

USERS = 10
ORDERS_PER_USER = 40
PLACE_EVERY_S = 0.03


def order_service(running: Cluster, env: dict[str, str], data: Path, logs: Path, n: int) -> Process:
    return running.start(
        f"order-{n}", ["stubs", "--only", "order", "--data-dir", str(data)], env, logs
    )


async def statuses(http: httpx.AsyncClient, users: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for user in users:
        listed = (await http.get("/api/orders", headers=auth(user))).json()["orders"]
        out.update({o["order_id"]: o["status"] for o in listed})
    return out


@pytest.mark.parametrize(
    "faults",
    [("kill", "kill"), ("kill", "freeze")],
    ids=["killed-twice", "killed-then-zombie"],
)
async def test_killing_the_order_service_mid_transaction_shows_each_event_once_in_order(
    tmp_path: Path, faults: tuple[str, str]
) -> None:
    prefix = unique("fo")
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_DEV_MODE": "true",
        "ORDERPUSH_ORDERS_PER_MINUTE": "100000",
    }
    data = tmp_path / "order-data"
    users = [f"u{n}-{prefix}" for n in range(USERS)]
    placed: list[str] = []
    with cluster() as running:
        rest = running.start(
            "rest", ["stubs", "--only", "payment,inventory,billing,delivery,view"], env, tmp_path
        )
        orders = order_service(running, env, data, tmp_path, 0)
        for process in (rest, orders):
            await asyncio.to_thread(running.wait_healthy, process)
        instance_id = (data / "instance-id").read_text().strip()

        async with httpx.AsyncClient(base_url=rest.http, timeout=30) as http:

            async def place_all() -> None:
                for _ in range(ORDERS_PER_USER):
                    for user in users:
                        answer = await http.post(
                            "/api/orders", json=order_body("SKU-1"), headers=auth(user)
                        )
                        assert answer.status_code == 202, answer.text
                        placed.append(answer.json()["order_id"])
                        await asyncio.sleep(PLACE_EVERY_S)

            flow = asyncio.create_task(place_all())
            in_flight: list[int] = []
            recovered_s: list[float] = []
            try:
                # First a crash (SIGKILL), then a zombie: a process frozen
                # (SIGSTOP) while its replacement starts, then thawed.
                zombie: Process | None = None
                for n, fault in enumerate(faults, start=1):
                    await poll_until(
                        "orders confirmed", lambda k=n * 20: _some_confirmed(http, users, k), 60
                    )
                    now = await statuses(http, users)
                    pending = [o for o, status in now.items() if status == "pending"]
                    in_flight.append(len(pending))
                    assert not flow.done(), "the orders ran out before the fault"
                    faulted_at = time.monotonic()
                    old = orders
                    if fault == "kill":
                        old.popen.kill()
                        await asyncio.to_thread(old.popen.wait, 10)
                    else:
                        old.popen.send_signal(signal.SIGSTOP)
                    orders = order_service(running, env, data, tmp_path, n)
                    await asyncio.to_thread(running.wait_healthy, orders)

                    async def caught_up(ids: list[str] = pending) -> bool:
                        now = await statuses(http, users)
                        return all(now.get(o) == "confirmed" for o in ids)

                    await poll_until("the pending orders confirmed", caught_up, 90, 0.2)
                    recovered_s.append(time.monotonic() - faulted_at)
                    if fault == "freeze":
                        old.popen.send_signal(signal.SIGCONT)
                        zombie = old

                await asyncio.wait_for(flow, 120)
            finally:
                flow.cancel()
            # The same name after each restart: the fence is what aborted
            # the dead process's open transaction, and what stops the zombie.
            assert (data / "instance-id").read_text().strip() == instance_id

            if zombie is not None:
                thawed = zombie

                async def fenced() -> bool:
                    return "fenced by a newer process" in thawed.log()

                await poll_until("the thawed zombie is fenced", fenced, 60, 0.5)

            async def all_confirmed() -> bool:
                now = await statuses(http, users)
                return all(now.get(o) == "confirmed" for o in placed)

            await poll_until("every order confirmed", all_confirmed, 90, 0.5)

        events = await committed_order_events(prefix, set(placed))
        per_order: dict[str, list[Event]] = {}
        for event in events:
            per_order.setdefault(event.order_id, []).append(event)
        assert set(per_order) == set(placed)
        twice = 0
        for order_id, mine in per_order.items():
            ids = [e.event_id for e in mine]
            twice += len(ids) - len(set(ids))
            if zombie is not None:
                # Known limit: without KIP-447 (aiokafka sends no group
                # generation with its transactional offsets), a zombie's
                # rejoin can make its successor read one input again; the
                # repeat has the same event id, which every reader drops.
                # Checked here: nothing else, and the order stays in order.
                seen: set[str] = set()
                mine = [e for e in mine if not (e.event_id in seen or seen.add(e.event_id))]  # type: ignore[func-returns-value]
            assert [(e.type, e.version) for e in mine] == [
                ("order.pending", 1),
                ("order.confirmed", 2),
            ], (order_id, [(e.type, e.version, e.event_id) for e in mine])
        print(
            f"FIGURES order service {' then '.join(faults)}: orders {len(placed)}, "
            f"pending at each fault {in_flight}, lost 0, shown twice {twice}, those pending "
            f"confirmed {[round(x, 2) for x in recovered_s]} s after each fault"
        )


async def _some_confirmed(http: httpx.AsyncClient, users: list[str], count: int) -> bool:
    now = await statuses(http, users)
    return sum(1 for s in now.values() if s == "confirmed") >= count


async def committed_order_events(prefix: str, wanted: set[str]) -> list[Event]:
    """Every order.* event on `orders` for `wanted`, as a read_committed
    reader sees them, in offset order per partition (an order's events are
    on one partition: keyed by order id)."""
    bus = KafkaEventBus(KAFKA_BOOTSTRAP, topic_prefix=prefix)
    await bus.start()
    consumer = await bus.consumer(["orders"], unique("reader"))
    got: list[Any] = []
    try:
        async with asyncio.timeout(60):
            while True:
                got += await consumer.getmany(timeout_ms=500)
                # Up to the last stable offset (transaction markers take
                # offsets too, so the lag says when the reader is through).
                if got and await consumer.lag() == 0:
                    break
    finally:
        await consumer.stop()
        await bus.stop()
    events = [decode_event(r.value) for r in got]
    return [e for e in events if e.order_id in wanted]
