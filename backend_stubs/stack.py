"""All the stub services of one process, with their stores, started together.

`orderpush stubs --only payment,order` runs a subset (one process per
service is how a real deployment would look); the demo runs everything next
to the gateway. Each service gets its own SQLite database: a file under
`data_dir`, or a private in-memory one when there is no `data_dir`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Final

from backend_stubs.billing import BillingService
from backend_stubs.delivery import DeliveryService
from backend_stubs.inventory import InventoryService
from backend_stubs.order import OrderService
from backend_stubs.order_view import GROUP as VIEW_GROUP
from backend_stubs.order_view import OrderView
from backend_stubs.payment import PaymentService
from backend_stubs.runner import Service, ServiceRunner
from backend_stubs.store import Store
from orderpush_core.bus.base import EventBus

log = logging.getLogger("orderpush.stubs")

#: The saga's services, in the order they are started.
SERVICES: Final = ("payment", "order", "inventory", "billing", "delivery")
#: The materialized view behind the storefront's GET routes.
VIEW: Final = "view"
ALL_SERVICES: Final = (*SERVICES, VIEW)


INSTANCE_ID_FILE: Final = "instance-id"


def stable_instance_id(data_dir: Path | None, explicit: str | None = None) -> str | None:
    """The name of this stubs process in its services' transactional ids.

    A restart must come back under the same name: starting a transactional
    producer with a name aborts what the previous holder left open (at once,
    instead of after the transaction timeout, during which read_committed
    readers of those partitions wait) and fences that holder if it is still
    alive somewhere (a zombie's later transactions fail). The process's
    identity is its data: the name is kept in `data_dir`, made once. Without
    a data dir (in-memory stores, nothing survives a restart) there is none.
    """
    if explicit:
        return explicit
    if data_dir is None:
        return None
    path = data_dir / INSTANCE_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        name = f"stubs-{uuid.uuid4().hex[:12]}"
        path.write_text(name + "\n")
        return name


class StubStack:
    """The selected services of the saga and the order view, on one bus."""

    def __init__(
        self,
        bus: EventBus,
        *,
        data_dir: Path | None = None,
        only: Collection[str] = ALL_SERVICES,
        group_prefix: str | None = None,
        poll_timeout_ms: int = 500,
        instance_id: str | None = None,
    ) -> None:
        unknown = sorted(set(only) - set(ALL_SERVICES))
        if unknown:
            raise ValueError(
                f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}"
            )
        self.bus = bus
        self.data_dir = data_dir
        # Consumer groups are cluster-wide on Kafka while topics carry the
        # bus's prefix; prefixing the groups the same way keeps two systems
        # (or two test runs) on one cluster from joining each other's groups.
        if group_prefix is None:
            group_prefix = str(getattr(bus, "topic_prefix", ""))
        self.group_prefix = group_prefix
        self._stores: list[Store] = []

        self.payment: PaymentService | None = None
        self.order: OrderService | None = None
        services: list[Service] = []
        if "payment" in only:
            self.payment = PaymentService(self._store("payment"), bus)
            services.append(self.payment)
        if "order" in only:
            self.order = OrderService(self._store("order"))
            services.append(self.order)
        if "inventory" in only:
            services.append(InventoryService(self._store("inventory")))
        if "billing" in only:
            services.append(BillingService(self._store("billing")))
        if "delivery" in only:
            services.append(DeliveryService(self._store("delivery")))
        self.services: dict[str, Service] = {s.name: s for s in services}
        self.runners: dict[str, ServiceRunner] = {
            s.name: ServiceRunner(
                bus,
                s,
                group=group_prefix + s.name,
                poll_timeout_ms=poll_timeout_ms,
                member_id=instance_id,
            )
            for s in services
        }
        self.view: OrderView | None = None
        if VIEW in only:
            self.view = OrderView(
                bus,
                self._store(VIEW),
                group=group_prefix + VIEW_GROUP,
                poll_timeout_ms=poll_timeout_ms,
            )
        self._started = False

    def _store(self, name: str) -> Store:
        store = Store.open(self.data_dir, name)
        self._stores.append(store)
        return store

    async def start(self) -> None:
        """Join every consumer group; if one cannot, stop the others and raise."""
        started: list[ServiceRunner | OrderView] = []
        try:
            for runner in self.runners.values():
                await runner.start()
                started.append(runner)
            if self.view is not None:
                await self.view.start()
                started.append(self.view)
        except BaseException:
            await asyncio.gather(*(part.stop() for part in started), return_exceptions=True)
            raise
        self._started = True
        log.info("stubs running: %s", ", ".join([*self.runners, *([VIEW] if self.view else [])]))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every loop (each bounded by `timeout_s`, all at once), then close the stores."""
        parts: list[ServiceRunner | OrderView] = list(self.runners.values())
        if self.view is not None:
            parts.append(self.view)
        await asyncio.gather(*(part.stop(timeout_s) for part in parts), return_exceptions=True)
        for store in self._stores:
            store.close()
        self._stores.clear()
        self._started = False

    async def __aenter__(self) -> StubStack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
