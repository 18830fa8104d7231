"""One run, start to finish: connect, send, collect, report.

`run_loadtest` is the core the command line and the tests share. The bus and
the HTTP client can be injected (tests hand in the gateway's own in-memory
bus); otherwise they are opened from the configuration and closed after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from loadtest.clients import LoadClient
from loadtest.config import LoadtestConfig, UsageError
from loadtest.ledger import ConnectionLog, Ledger
from loadtest.report import ConnectionStats, Report, TrafficStats, summarize
from loadtest.traffic import BusPlan, place_orders, send_to_bus
from orderpush_core.auth import issue_token
from orderpush_core.bus import BusError, EventBus, open_bus

log = logging.getLogger("orderpush.loadtest")

#: File descriptors kept free for the bus, HTTP and the interpreter itself.
FD_RESERVE = 200


def ensure_fd_limit(connections: int) -> None:
    """Raise the soft open-files limit if needed; refuse a run that cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise UsageError(
            "--users/--connections-per-user",
            f"{connections} connections need {needed} open files; the limit is {soft} "
            "(raise it with `ulimit -n`)",
        )


def _setup(config: LoadtestConfig) -> dict[str, Any]:
    return {
        "run_id": config.run_id,
        "source": config.source,
        "urls": list(config.urls),
        "users": config.users,
        "connections_per_user": config.connections_per_user,
        "events_per_user": config.events_per_user,
        "versions_per_order": config.order_versions,
        "orders_per_user": config.orders_per_user,
        "bus": config.bus_url if config.source == "bus" else None,
        "api": config.effective_api_url() if config.source == "api" else None,
        "duration_s": config.duration_s,
        "timeout_s": config.timeout_s,
        "ramp_s": config.ramp_s,
        "reconnect": config.reconnect,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


async def _open_all(config: LoadtestConfig, clients: list[LoadClient]) -> float:
    """Open every connection, spread over `ramp_s`; returns the seconds it took."""
    gate = asyncio.Semaphore(config.connect_concurrency)
    started = time.perf_counter()
    count = len(clients)

    async def one(i: int, client: LoadClient) -> None:
        if config.ramp_s > 0:
            await asyncio.sleep(max(0.0, started + config.ramp_s * i / count - time.perf_counter()))
        async with gate:
            await client.open()

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return time.perf_counter() - started


def _connection_stats(clients: list[LoadClient], connect_s: float) -> ConnectionStats:
    stats = ConnectionStats(planned=len(clients), connect_s=connect_s)
    for client in clients:
        first_url = client.urls[client.log.index % len(client.urls)]
        figures = stats.by_url.setdefault(first_url, {"opened": 0, "failed": 0, "events": 0})
        figures["events"] += client.log.frames
        if client.opened:
            stats.opened += 1
            figures["opened"] += 1
            if client.connect_ms is not None:
                stats.connect_ms.append(client.connect_ms)
        else:
            stats.failed += 1
            figures["failed"] += 1
            stats.failure_reasons[client.failure or "unknown"] += 1
        stats.dropped += client.dropped
        stats.reconnects += client.reconnects
        stats.resumed += client.resumed
        stats.resnapshots += client.resnapshots
        stats.close_codes.update(Counter(str(code) for code in client.close_codes))
    return stats


async def _send(
    config: LoadtestConfig,
    ledger: Ledger,
    stats: TrafficStats,
    user_ids: list[str],
    bus: EventBus | None,
    http: httpx.AsyncClient | None,
    token_ttl_s: float,
) -> None:
    if config.source == "bus":
        owned = bus is None
        if bus is None:
            assert config.bus_url is not None
            bus = open_bus(config.bus_url, topic_prefix=config.topic_prefix)
        try:
            if owned:
                await bus.start()
            plan = BusPlan(user_ids, config.events_per_user, config.versions_per_order)
            await send_to_bus(
                bus, plan, ledger, stats, run_id=config.run_id, duration_s=config.duration_s
            )
        except BusError as exc:
            stats.error = f"--bus {config.bus_url}: {exc}"
        finally:
            if owned:
                with contextlib.suppress(Exception):
                    await bus.stop()
        return
    owned_http = http is None
    if http is None:
        http = httpx.AsyncClient(base_url=config.effective_api_url(), timeout=10.0, trust_env=False)
    try:
        await place_orders(
            http,
            user_ids,
            config.orders_per_user,
            ledger,
            stats,
            secret=config.secret,
            token_ttl_s=token_ttl_s,
            audience=config.audience,
            issuer=config.issuer,
            duration_s=config.duration_s,
            concurrency=config.api_concurrency,
        )
    finally:
        if owned_http:
            await http.aclose()


async def run_loadtest(
    config: LoadtestConfig,
    *,
    bus: EventBus | None = None,
    http: httpx.AsyncClient | None = None,
    before_traffic: Callable[[], Awaitable[None]] | None = None,
) -> Report:
    """Run the load test described by `config` and return its report.

    `before_traffic` is awaited once the connections are open, just before
    the first send (a benchmark reads the gateways' counters there)."""
    config = config.validated()
    ensure_fd_limit(config.connections)
    ledger = Ledger()
    traffic = TrafficStats(source=config.source)
    user_ids = config.user_ids()
    token_ttl_s = config.hard_deadline_s() + 600
    clients: list[LoadClient] = []
    for u, user_id in enumerate(user_ids):
        token = issue_token(
            user_id,
            config.secret,
            ttl_s=token_ttl_s,
            audience=config.audience,
            issuer=config.issuer,
        )
        for c in range(config.connections_per_user):
            index = u * config.connections_per_user + c
            connection_log = ConnectionLog(index, user_id, config.urls[index % len(config.urls)])
            ledger.add_log(connection_log)
            clients.append(
                LoadClient(
                    connection_log,
                    ledger,
                    token,
                    config.urls,
                    index,
                    connect_timeout_s=config.connect_timeout_s,
                    reconnect=config.reconnect,
                    max_reconnects=config.max_reconnects,
                )
            )

    connect_s = 0.0
    try:
        async with asyncio.timeout(config.hard_deadline_s()):
            connect_s = await _open_all(config, clients)
            if any(c.opened for c in clients):
                if before_traffic is not None:
                    await before_traffic()
                await _send(config, ledger, traffic, user_ids, bus, http, token_ttl_s)
                ledger.finish_sending()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ledger.complete.wait(), config.timeout_s)
                # Linger: a duplicate or a stray event arriving late is still caught.
                await asyncio.sleep(config.settle_s)
    except TimeoutError:
        deadline = f"the run hit its hard deadline of {config.hard_deadline_s():.0f} s"
        log.warning("%s", deadline)
        if not ledger.sending_done:
            traffic.error = traffic.error or f"{deadline} while sending"
    finally:
        async with asyncio.timeout(30):
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return summarize(
        ledger,
        connections=_connection_stats(clients, connect_s),
        traffic=traffic,
        setup=_setup(config),
    )
