"""The load tester: its accounting (unit), its flags, and whole runs against
real uvicorn gateways on the in-memory bus (the bus is handed in, since
memory:// cannot be reached from outside the process)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import cast

import pytest
from starlette.applications import Starlette

from gateway.app import Gateway
from gateway.hub import Frame
from gateway.protocol import CloseCode, event_frame
from gateway.settings import DEV_SECRET, Settings
from loadtest import cli
from loadtest.config import LoadtestConfig, UsageError
from loadtest.ledger import ConnectionLog, Ledger, Received
from loadtest.report import ConnectionStats, Report, TrafficStats, format_text, summarize
from loadtest.runner import run_loadtest
from loadtest.traffic import BusPlan
from orderpush.apps import gateway_app
from orderpush_core.bus import EventBus
from orderpush_core.bus.memory import MemoryEventBus
from orderpush_core.events import encode_event, make_event
from tests.backends import unique
from tests.harness import serve

# -- the accounting, fed by hand --------------------------------------------


def _event(
    event_id: str, user: str, order: str, version: int, sent_ns: int | None = None
) -> Received:
    status = "pending" if version == 1 else "confirmed"
    return Received(event_id, f"order.{status}", order, user, version, sent_ns)


def _ledger_for(user: str, keys: list[tuple[str, int]]) -> tuple[Ledger, ConnectionLog]:
    ledger = Ledger()
    log = ConnectionLog(0, user, "ws://127.0.0.1:1/ws")
    ledger.add_log(log)
    ledger.attach(log)
    ledger.expect_many(user, keys)
    ledger.finish_sending()
    return ledger, log


def _report(ledger: Ledger) -> Report:
    return summarize(
        ledger,
        connections=ConnectionStats(planned=1, opened=1),
        traffic=TrafficStats(source="bus", events_sent=3, first_send_ns=0, last_send_ns=1),
    )


def test_a_clean_sequence_passes() -> None:
    ledger, log = _ledger_for("alice", [("o1", 1), ("o1", 2), ("o2", 1)])
    for i, (order, version) in enumerate([("o1", 1), ("o1", 2), ("o2", 1)]):
        ledger.observe(log, _event(f"e{i}", "alice", order, version, sent_ns=1_000_000), 3_000_000)
    report = _report(ledger)
    assert ledger.complete.is_set()
    assert (report.lost, report.duplicated, report.out_of_order, report.wrong_user) == (0, 0, 0, 0)
    assert report.events_expected == report.events_matched == 3
    assert report.latency_ms["count"] == 3 and report.latency_ms["p50"] == 2.0
    assert report.passed and report.exit_code == 0
    assert "verdict       PASS" in format_text(report)


def test_a_duplicate_is_flagged() -> None:
    ledger, log = _ledger_for("alice", [("o1", 1), ("o1", 2)])
    ledger.observe(log, _event("e1", "alice", "o1", 1), 1)
    ledger.observe(log, _event("e1", "alice", "o1", 1), 2)
    ledger.observe(log, _event("e2", "alice", "o1", 2), 3)
    report = _report(ledger)
    assert report.duplicated == 1 and report.lost == 0
    assert not report.passed and report.exit_code == 1
    assert any("DUPLICATED" in e for e in report.examples)


def test_a_gap_is_lost() -> None:
    ledger, log = _ledger_for("alice", [("o1", 1), ("o1", 2), ("o1", 3)])
    ledger.observe(log, _event("e1", "alice", "o1", 1), 1)
    ledger.observe(log, _event("e3", "alice", "o1", 3), 3)
    report = _report(ledger)
    assert not ledger.complete.is_set()
    assert report.lost == 1 and report.out_of_order == 0
    assert "LOST o1 v2" in " ".join(report.examples)
    assert report.exit_code == 1


def test_a_version_going_backwards_is_out_of_order() -> None:
    ledger, log = _ledger_for("alice", [("o1", 1), ("o1", 2)])
    ledger.observe(log, _event("e2", "alice", "o1", 2), 1)
    ledger.observe(log, _event("e1", "alice", "o1", 1), 2)
    report = _report(ledger)
    assert report.out_of_order == 1 and report.lost == 0 and report.duplicated == 0
    assert report.exit_code == 1


def test_another_users_event_is_wrong_user() -> None:
    ledger, log = _ledger_for("alice", [("o1", 1)])
    ledger.observe(log, _event("e1", "alice", "o1", 1), 1)
    ledger.observe(log, _event("x1", "mallory", "m1", 1), 2)
    report = _report(ledger)
    assert report.wrong_user == 1 and report.lost == 0
    assert report.exit_code == 1
    assert "WRONG USER    1" in format_text(report)


def test_an_event_arriving_before_its_expectation_still_counts() -> None:
    """--source api: the saga may beat the POST's answer to the client."""
    ledger = Ledger()
    log = ConnectionLog(0, "alice", "ws://127.0.0.1:1/ws")
    ledger.add_log(log)
    ledger.attach(log)
    ledger.observe(log, _event("e2", "alice", "o1", 2), 5_000_000)
    ledger.expect("alice", ("o1", 2), sent_ns=1_000_000)
    ledger.finish_sending()
    assert ledger.complete.is_set()
    assert ledger.latencies_ns == [4_000_000]
    assert _report(ledger).lost == 0


def test_the_bus_plan_interleaves_users_and_keeps_versions_in_order() -> None:
    plan = BusPlan(["a", "b"], events_per_user=3, versions=2)
    sent = [(p.user_id, p.order_id, p.version, p.status) for p in (plan[k] for k in range(6))]
    assert sent == [
        ("a", "a-o0", 1, "pending"),
        ("b", "b-o0", 1, "pending"),
        ("a", "a-o0", 2, "confirmed"),
        ("b", "b-o0", 2, "confirmed"),
        ("a", "a-o1", 1, "pending"),
        ("b", "b-o1", 1, "pending"),
    ]
    assert plan.keys_of(1) == [("b-o0", 1), ("b-o0", 2), ("b-o1", 1)]


# -- flags ------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orderpush loadtest", exit_on_error=False)
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--users", "0"], "--users"),
        (["--connections-per-user", "1000"], "--connections-per-user"),
        (["--events-per-user", "0"], "--events-per-user"),
        (["--source", "bus"], "--bus"),
        (["--source", "bus", "--bus", "memory://"], "--bus"),
        (["--source", "bus", "--bus", "kafka://10.1.2.3:9092"], "--bus"),
        (["--url", "ws://192.0.2.7:8000/ws"], "--url"),
        (["--url", "http://127.0.0.1:8000/ws"], "--url"),
        (["--api", "http://example.com"], "--api"),
        (["--timeout-s", "0"], "--timeout-s"),
        (["--duration-s", "-1"], "--duration-s"),
        (["--secret", "short"], "--secret"),
        (["--versions-per-order", "3"], "--versions-per-order"),
        (["--json", "/nonexistent-dir/out.json"], "--json"),
    ],
)
async def test_a_bad_flag_exits_2_naming_it(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli.run(_parse(*argv)) == 2
    assert f"error: {flag}" in capsys.readouterr().err


def test_the_orderpush_command_knows_loadtest(capsys: pytest.CaptureFixture[str]) -> None:
    from orderpush.cli import main

    assert main(["loadtest", "--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["loadtest", "--users", "many"])
    assert exited.value.code == 2
    assert "--users" in capsys.readouterr().err


def test_a_sane_configuration_passes_the_checks() -> None:
    config = cli.config_from_args(
        _parse("--source", "bus", "--bus", "kafka://127.0.0.1:9092", "--url", "ws://localhost:1/ws")
    )
    assert config.source == "bus" and config.secret == DEV_SECRET
    with pytest.raises(UsageError, match="--users"):
        LoadtestConfig(users=-1, secret=DEV_SECRET).validated()


# -- whole runs against real gateways -----------------------------------------


class _SharedBus:
    """One in-memory bus for several instances; an instance stopping must
    not stop the bus under the others (the test stops it at the end)."""

    def __init__(self, bus: MemoryEventBus) -> None:
        self.bus = bus

    def __getattr__(self, name: str) -> object:
        return getattr(self.bus, name)

    async def stop(self) -> None:
        return None


@asynccontextmanager
async def gateways(count: int) -> AsyncIterator[tuple[list[str], EventBus, list[Starlette]]]:
    """`count` gateway instances under uvicorn sharing one in-memory bus and backplane."""
    bus = MemoryEventBus()
    backplane = unique("lt")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(bus.stop)
        shared = cast(EventBus, _SharedBus(bus))
        apps = [
            gateway_app(Settings(sessions_url=f"memory://{backplane}"), bus=shared)
            for _ in range(count)
        ]
        addrs = [await stack.enter_async_context(serve(app)) for app in apps]
        yield [f"ws://{addr}/ws" for addr in addrs], bus, apps


def _config(urls: list[str], **changes: object) -> LoadtestConfig:
    options: dict[str, object] = {
        "urls": tuple(urls),
        "source": "bus",
        "bus_url": "kafka://127.0.0.1:9092",  # validated only; the bus is handed in
        "secret": DEV_SECRET,
        "timeout_s": 20.0,
        "settle_s": 0.3,
    }
    options.update(changes)
    return LoadtestConfig(**options)  # type: ignore[arg-type]


async def test_a_run_of_20_users_on_one_gateway_is_clean(tmp_path: Path) -> None:
    async with gateways(1) as (urls, bus, _):
        report = await run_loadtest(_config(urls, users=20, events_per_user=5), bus=bus)
    assert report.connections["opened"] == 20 and report.connections["failed"] == 0
    assert report.traffic["events_sent"] == 100
    assert report.events_expected == report.events_matched == 100
    assert (report.lost, report.duplicated, report.out_of_order, report.wrong_user) == (0, 0, 0, 0)
    assert report.other_events == 0 and report.completed
    assert report.latency_ms["count"] == 100 and report.latency_ms["max"] is not None
    assert report.throughput_eps > 0
    assert report.exit_code == 0, format_text(report)
    out = tmp_path / "report.json"
    report.write_json(out)
    assert json.loads(out.read_text())["lost"] == 0


async def test_two_gateways_and_two_sockets_per_user_are_clean() -> None:
    """Round-robin puts each user's two sockets on different instances, so
    every event also travels between instances through the backplane."""
    async with gateways(2) as (urls, bus, _):
        report = await run_loadtest(
            _config(
                urls, users=20, connections_per_user=2, events_per_user=6, versions_per_order=3
            ),
            bus=bus,
        )
    assert report.connections["opened"] == 40
    assert {u: f["opened"] for u, f in report.connections["by_url"].items()} == {
        urls[0]: 20,
        urls[1]: 20,
    }
    assert report.events_expected == report.events_matched == 20 * 2 * 6
    assert (report.lost, report.duplicated, report.out_of_order, report.wrong_user) == (0, 0, 0, 0)
    assert report.exit_code == 0, format_text(report)


async def test_a_run_flags_another_users_event() -> None:
    """The gateway never misroutes, so the misrouting is staged: a stranger's
    event is put straight into a load-test user's send queues, past routing."""
    async with gateways(1) as (urls, bus, apps):
        gateway: Gateway = apps[0].state.gateway
        config = _config(urls, users=3, events_per_user=2)
        task = asyncio.create_task(run_loadtest(config, bus=bus))
        async with asyncio.timeout(10):
            while gateway.hub.connection_count() < 3:
                await asyncio.sleep(0.02)
        stranger = make_event(
            "order.pending", order_id="x1", user_id="stranger", status="pending", version=1
        )
        frame = Frame(event_frame("9999999999999-0", encode_event(stranger)))
        for conn in list(gateway.hub._users[config.user_ids()[0]]):
            conn.queue.put_nowait(frame)
        report = await task
    assert report.wrong_user == 1 and report.lost == 0
    assert report.exit_code == 1
    assert any("WRONG USER" in p for p in report.problems)


async def test_events_that_never_come_are_lost_within_the_timeout() -> None:
    """A bus nobody consumes: everything is LOST, and the run still ends in time."""
    async with gateways(1) as (urls, _, _):
        elsewhere = MemoryEventBus()
        report = await asyncio.wait_for(
            run_loadtest(_config(urls, users=2, events_per_user=2, timeout_s=0.5), bus=elsewhere),
            15,
        )
    assert report.events_expected == 4 and report.lost == 4 and not report.completed
    assert report.exit_code == 1


async def test_connections_that_cannot_open_fail_the_run() -> None:
    from tests.harness import free_port

    url = f"ws://127.0.0.1:{free_port()}/ws"
    report = await run_loadtest(
        _config([url], users=2, connect_timeout_s=2.0), bus=MemoryEventBus()
    )
    assert report.connections["failed"] == 2
    assert report.connections["failure_reasons"] == {"connection refused": 2}
    assert report.exit_code == 1


async def test_a_run_through_the_storefront_api_of_the_demo_is_clean() -> None:
    """--source api: orders placed with POST /api/orders run the whole saga;
    each must reach its user's sockets as order.pending then order.confirmed."""
    from orderpush.demo import build_demo_app

    app = build_demo_app(Settings(sessions_url=f"memory://{unique('lt')}"))
    async with serve(app) as addr:
        config = LoadtestConfig(
            urls=(f"ws://{addr}/ws",),
            users=20,
            events_per_user=3,  # two orders of two versions each
            source="api",
            secret=DEV_SECRET,
            timeout_s=30.0,
            settle_s=0.3,
        )
        report = await run_loadtest(config)
    assert report.traffic["orders_placed"] == 40 and report.traffic["api_errors"] == {}
    assert report.events_expected == report.events_matched == 80
    assert (report.lost, report.duplicated, report.out_of_order, report.wrong_user) == (0, 0, 0, 0)
    # payment.authorized, inventory.reserved, ... arrive too and are not errors
    assert report.other_events > 0
    assert report.latency_ms["count"] == 40  # POST -> order.confirmed, once per order
    assert report.exit_code == 0, format_text(report)


async def test_clients_closed_with_1012_resume_elsewhere_and_lose_nothing() -> None:
    """A gateway restarting closes its sockets with 1012; the load tester's
    clients reconnect to the next instance with their cursor, as the
    protocol asks, and every event still arrives exactly once."""
    async with gateways(2) as (urls, bus, apps):
        first: Gateway = apps[0].state.gateway
        config = _config(urls, users=10, events_per_user=20, duration_s=1.0)

        async def restart_first_midway() -> None:
            await asyncio.sleep(0.5)
            first.hub.close_all(CloseCode.SERVICE_RESTART, "server restarting")

        restarts: list[asyncio.Task[None]] = []

        async def before_traffic() -> None:
            restarts.append(asyncio.create_task(restart_first_midway()))

        report = await run_loadtest(config, bus=bus, before_traffic=before_traffic)
        await restarts[0]
    assert report.connections["close_codes"] == {"1012": 5}
    assert report.connections["reconnects"] == 5 and report.connections["resumed"] == 5
    assert report.connections["dropped"] == 0
    assert (report.lost, report.duplicated, report.out_of_order, report.wrong_user) == (0, 0, 0, 0)
    assert report.exit_code == 0, format_text(report)


async def test_orders_the_api_refuses_fail_the_run_and_say_why() -> None:
    """A gateway without a storefront answers 404 on /api/orders."""
    async with gateways(1) as (urls, _, _):
        config = LoadtestConfig(
            urls=tuple(urls), users=2, events_per_user=2, source="api", secret=DEV_SECRET
        )
        report = await run_loadtest(config)
    assert report.traffic["api_errors"] == {"http 404": 2}
    assert report.traffic["orders_placed"] == 0
    assert "404" in (report.traffic["first_api_error"] or "")
    assert report.exit_code == 1
    assert "refused by the API" in format_text(report)
