"""`orderpush loadtest`: flags, their checks, and the exit code.

Exit codes: 0 everything expected arrived exactly once, in order, to the
right user; 1 something was lost, duplicated, out of order, misrouted, or a
connection or the traffic failed; 2 a flag is wrong (the message names it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.settings import DEV_SECRET
from loadtest.config import LoadtestConfig, UsageError
from loadtest.report import EXIT_USAGE

DEFAULT_URL = "ws://127.0.0.1:8000/ws"


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loadtest flags, on the `orderpush loadtest` sub-parser."""
    parser.description = (
        "Open many WebSocket connections to one or more gateways, send order traffic, "
        "and report what every connection received: lost, duplicated, out-of-order and "
        "misrouted events, latency and throughput. Loopback targets only. "
        "Exit 0 when all is well, 1 when anything went wrong, 2 for a bad flag."
    )
    env = os.environ
    target = parser.add_argument_group("targets")
    target.add_argument(
        "--url",
        action="append",
        metavar="WS_URL",
        help=f"gateway WebSocket URL; repeat for several instances, clients are spread "
        f"round-robin (default {DEFAULT_URL})",
    )
    target.add_argument(
        "--source",
        choices=("bus", "api"),
        default="api",
        help="api: place orders with POST /api/orders (latency POST -> order.confirmed); "
        "bus: produce order events straight to Kafka (latency produce -> receive). "
        "Default api",
    )
    target.add_argument(
        "--bus",
        default=env.get("ORDERPUSH_BUS") or None,
        metavar="URL",
        help="kafka://HOST:PORT for --source bus (default ORDERPUSH_BUS)",
    )
    target.add_argument(
        "--topic-prefix",
        default=env.get("ORDERPUSH_TOPIC_PREFIX", ""),
        metavar="PREFIX",
        help="the gateways' topic prefix (default ORDERPUSH_TOPIC_PREFIX)",
    )
    target.add_argument(
        "--api",
        metavar="URL",
        help="storefront API for --source api (default: the first --url's origin, "
        "whose gateway proxies /api)",
    )
    target.add_argument(
        "--secret",
        default=env.get("ORDERPUSH_JWT_SECRET") or DEV_SECRET,
        metavar="SECRET",
        help="HS256 secret to sign the users' tokens (default ORDERPUSH_JWT_SECRET, "
        "else the development secret)",
    )

    load = parser.add_argument_group("load")
    load.add_argument(
        "--users", type=_int, metavar="N", default=200, help="distinct users (default 200)"
    )
    load.add_argument(
        "--connections-per-user",
        type=_int,
        metavar="N",
        default=1,
        help="sockets per user (default 1)",
    )
    load.add_argument(
        "--events-per-user",
        type=_int,
        metavar="N",
        default=5,
        help="order events each user gets (default 5); with --source api, orders of two "
        "events each (pending, confirmed), rounded up",
    )
    load.add_argument(
        "--versions-per-order",
        type=_int,
        metavar="N",
        default=2,
        help="--source bus: versions per order, 1-4: pending, confirmed, shipped, "
        "delivered (default 2)",
    )
    load.add_argument(
        "--duration-s",
        type=_seconds,
        metavar="S",
        default=0.0,
        help="spread the traffic over this many seconds (default 0: as fast as possible)",
    )
    load.add_argument(
        "--ramp-s",
        type=_seconds,
        metavar="S",
        default=0.0,
        help="spread the connecting over this time",
    )
    load.add_argument(
        "--timeout-s",
        type=_seconds,
        metavar="S",
        default=30.0,
        help="after the traffic, wait at most this long for every expected event "
        "(default 30); what has not arrived then is LOST",
    )
    load.add_argument(
        "--connect-timeout-s",
        type=_seconds,
        metavar="S",
        default=10.0,
        help="per connection, to get welcome + snapshot (default 10)",
    )
    load.add_argument(
        "--settle-s",
        type=_seconds,
        metavar="S",
        default=0.5,
        help="keep listening this long after everything arrived, to catch late "
        "duplicates (default 0.5)",
    )
    load.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="do not reconnect (with the cursor) when a gateway closes a connection",
    )
    load.add_argument(
        "--max-reconnects", type=_int, metavar="N", default=5, help="per connection (default 5)"
    )
    load.add_argument(
        "--connect-concurrency",
        type=_int,
        metavar="N",
        default=100,
        help="handshakes in flight at once (default 100)",
    )
    load.add_argument(
        "--api-concurrency",
        type=_int,
        metavar="N",
        default=32,
        help="POSTs in flight at once (default 32)",
    )
    load.add_argument(
        "--user-prefix",
        help="user ids are PREFIX + u<n> (default: lt-<run id>-, fresh users every run)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="of the load tester's own log (default warning)",
    )


def config_from_args(args: argparse.Namespace) -> LoadtestConfig:
    """The run the flags describe; raises UsageError naming a bad flag."""
    return LoadtestConfig(
        urls=tuple(args.url or [DEFAULT_URL]),
        users=args.users,
        connections_per_user=args.connections_per_user,
        events_per_user=args.events_per_user,
        versions_per_order=args.versions_per_order,
        source=args.source,
        bus_url=args.bus,
        topic_prefix=args.topic_prefix,
        api_url=args.api,
        secret=args.secret,
        audience=os.environ.get("ORDERPUSH_JWT_AUDIENCE") or None,
        issuer=os.environ.get("ORDERPUSH_JWT_ISSUER") or None,
        duration_s=args.duration_s,
        timeout_s=args.timeout_s,
        ramp_s=args.ramp_s,
        connect_timeout_s=args.connect_timeout_s,
        settle_s=args.settle_s,
        reconnect=args.reconnect,
        max_reconnects=args.max_reconnects,
        connect_concurrency=args.connect_concurrency,
        api_concurrency=args.api_concurrency,
        user_prefix=args.user_prefix,
    ).validated()


def _usage_error(exc: UsageError) -> int:
    print(f"orderpush loadtest: error: {exc}", file=sys.stderr)
    return EXIT_USAGE


async def run(args: argparse.Namespace) -> int:
    """Run the load test the flags describe; print the report; the exit code."""
    from loadtest.report import format_text
    from loadtest.runner import run_loadtest

    try:
        config = config_from_args(args)
    except UsageError as exc:
        return _usage_error(exc)
    if args.json is not None and not args.json.parent.is_dir():
        return _usage_error(UsageError("--json", f"folder {args.json.parent} does not exist"))
    try:
        report = await run_loadtest(config)
    except UsageError as exc:
        return _usage_error(exc)
    print(format_text(report))
    if args.json is not None:
        report.write_json(args.json)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtest ...`: the same as `orderpush loadtest ...`."""
    import asyncio
    import logging

    parser = argparse.ArgumentParser(prog="orderpush loadtest")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(run(args))
