"""The `orderpush` command line (docs/protocol.md section 4)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from gateway.settings import LOOPBACK_HOSTS, ConfigError, Settings, settings_from_env


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not between 1 and 65535")
    return port


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 64:
        raise argparse.ArgumentTypeError(f"{number} is not between 1 and 64")
    return number


def _server_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=_port, default=default_port, help=f"port (default {default_port})"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def _admin_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-host", help="address of the admin listener (ORDERPUSH_ADMIN_HOST, 127.0.0.1)"
    )
    parser.add_argument(
        "--admin-port",
        type=_port,
        help="port of /metrics, /api/stats, /operator (ORDERPUSH_ADMIN_PORT, 9000)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderpush", description="Real-time order-status push gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole system in one process (no Kafka, no Redis)")
    _server_flags(demo, 8000)
    _admin_flags(demo)
    demo.add_argument(
        "--expose-dev-sign-in",
        action="store_true",
        help="allow a --host other than loopback although anyone who reaches it can "
        "sign in as any user and read every user's orders (the demo is dev mode)",
    )

    gw = sub.add_parser("gateway", help="one gateway instance")
    _server_flags(gw, 8000)
    _admin_flags(gw)
    gw.add_argument("--bus", help="memory:// or kafka://HOST:PORT[,HOST:PORT] (ORDERPUSH_BUS)")
    gw.add_argument("--sessions", help="memory:// or redis://HOST:PORT/DB (ORDERPUSH_SESSIONS)")
    gw.add_argument(
        "--storefront-url", help="storefront API to proxy /api to (ORDERPUSH_STOREFRONT_URL)"
    )
    gw.add_argument("--instance-id", help="this instance's name (ORDERPUSH_INSTANCE_ID)")
    gw.add_argument("--topic-prefix", help="prefix of every topic name (ORDERPUSH_TOPIC_PREFIX)")
    gw.add_argument(
        "--workers",
        type=_count,
        default=1,
        help="processes serving the port (SO_REUSEPORT), each a group member with "
        "instance id INSTANCE_ID-wK (default 1)",
    )
    gw.add_argument(
        "--loop",
        default="uvloop",
        choices=["uvloop", "asyncio"],
        help="event loop (default uvloop; asyncio for comparison)",
    )
    gw.add_argument(
        "--http",
        default="httptools",
        choices=["httptools", "h11"],
        help="HTTP parser (default httptools; h11 for comparison)",
    )
    gw.add_argument(
        "--ws",
        default="websockets-sansio",
        choices=["websockets-sansio", "websockets", "wsproto"],
        help="uvicorn's WebSocket implementation (default websockets-sansio)",
    )
    gw.add_argument(
        "--ws-deflate",
        action="store_true",
        help="accept permessage-deflate (off by default: it costs ~40 KiB per socket "
        "for little gain on small JSON frames)",
    )

    stubs = sub.add_parser("stubs", help="the backend services and the storefront API")
    _server_flags(stubs, 8100)
    stubs.add_argument("--bus", help="memory:// or kafka://HOST:PORT (ORDERPUSH_BUS)")
    stubs.add_argument(
        "--only",
        help="comma-separated parts: payment,order,inventory,billing,delivery,view (default all)",
    )
    stubs.add_argument(
        "--data-dir", help="where each service keeps its SQLite file (default: memory)"
    )
    stubs.add_argument("--topic-prefix", help="prefix of every topic name (ORDERPUSH_TOPIC_PREFIX)")
    stubs.add_argument(
        "--instance-id",
        help="this process's name, part of its services' Kafka transactional ids "
        "(ORDERPUSH_INSTANCE_ID; default: one kept in --data-dir)",
    )

    token = sub.add_parser(
        "token", help="print a JWT for USER_ID signed with the configured secret"
    )
    token.add_argument("user_id")
    token.add_argument("--ttl", type=_positive, default=3600.0, help="lifetime in seconds")

    loadtest = sub.add_parser("loadtest", help="drive many WebSocket clients and report")
    from loadtest.cli import add_arguments

    add_arguments(loadtest)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_env()
    settings = settings.with_overrides(
        bus_url=getattr(args, "bus", None),
        sessions_url=getattr(args, "sessions", None),
        storefront_url=getattr(args, "storefront_url", None),
        instance_id=getattr(args, "instance_id", None),
        topic_prefix=getattr(args, "topic_prefix", None),
        admin_host=getattr(args, "admin_host", None),
        admin_port=getattr(args, "admin_port", None),
    )
    if args.command == "demo":
        # The demo is dev mode whatever the environment says: its sign-in mints
        # a token for any name, so it stays on loopback unless told otherwise.
        settings = settings.with_overrides(dev_mode=True)
        if args.host not in LOOPBACK_HOSTS and not args.expose_dev_sign_in:
            raise ConfigError(
                f"--host {args.host}: the demo's dev sign-in lets anyone who reaches it act "
                "as any user; listen on 127.0.0.1, or pass --expose-dev-sign-in to accept that"
            )
    return settings.validated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        parser.exit(2, f"orderpush {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(args, "log_level", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "token":
        from orderpush_core.auth import issue_token

        settings = load_settings(args)
        token = issue_token(
            args.user_id,
            settings.jwt_secret,
            ttl_s=args.ttl,
            # The gateway checks these when configured: a token without them
            # would be refused.
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        print(token)
        return 0
    if args.command == "loadtest":
        from loadtest.cli import run

        return asyncio.run(run(args))
    if args.command == "gateway" and args.workers > 1:
        from orderpush.workers import serve_workers

        return serve_workers(args, load_settings(args))
    from orderpush.serve import serve_command

    return serve_command(args, load_settings(args))


if __name__ == "__main__":
    sys.exit(main())
