"""What one load-test run does, checked before anything starts.

Every limit is here, so a run is always bounded in count and in time, and
every target must be a loopback address: the load tester is for one's own
machine, never a way to flood somebody else's.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import uuid
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

Source = Literal["bus", "api"]

MAX_USERS: Final = 100_000
MAX_CONNECTIONS_PER_USER: Final = 100
MAX_CONNECTIONS: Final = 50_000
MAX_EVENTS_PER_USER: Final = 100_000
MAX_DELIVERIES: Final = 1_000_000
MAX_VERSIONS_PER_ORDER: Final = 4
MAX_DURATION_S: Final = 3600.0
MAX_TIMEOUT_S: Final = 3600.0
MAX_RAMP_S: Final = 3600.0
#: Order statuses in the order a synthetic order goes through them (bus mode).
STATUS_LADDER: Final = ("pending", "confirmed", "shipped", "delivered")
#: Every order placed through the API ends at order.confirmed, its version 2.
API_VERSIONS_PER_ORDER: Final = 2


class UsageError(ValueError):
    """A flag has a value the load tester cannot use; the message names it."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclass(frozen=True, slots=True)
class LoadtestConfig:
    urls: tuple[str, ...] = ("ws://127.0.0.1:8000/ws",)
    users: int = 200
    connections_per_user: int = 1
    events_per_user: int = 5
    versions_per_order: int = 2
    source: Source = "api"
    bus_url: str | None = None
    topic_prefix: str = ""
    api_url: str | None = None
    secret: str = ""
    audience: str | None = None
    issuer: str | None = None
    duration_s: float = 0.0
    timeout_s: float = 30.0
    ramp_s: float = 0.0
    connect_timeout_s: float = 10.0
    settle_s: float = 0.5
    reconnect: bool = True
    max_reconnects: int = 5
    connect_concurrency: int = 100
    api_concurrency: int = 32
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    user_prefix: str | None = None

    # -- derived -----------------------------------------------------------

    @property
    def connections(self) -> int:
        return self.users * self.connections_per_user

    @property
    def order_versions(self) -> int:
        """Versions (order.* events) each order goes through."""
        return self.versions_per_order if self.source == "bus" else API_VERSIONS_PER_ORDER

    @property
    def orders_per_user(self) -> int:
        return math.ceil(self.events_per_user / self.order_versions)

    @property
    def events_per_user_expected(self) -> int:
        """order.* events each connection should get for its user."""
        if self.source == "bus":
            return self.events_per_user
        return self.orders_per_user * API_VERSIONS_PER_ORDER

    @property
    def deliveries(self) -> int:
        return self.connections * self.events_per_user_expected

    def user_ids(self) -> list[str]:
        prefix = self.user_prefix if self.user_prefix is not None else f"lt-{self.run_id}-"
        width = len(str(self.users))
        return [f"{prefix}u{i:0{width}d}" for i in range(self.users)]

    def effective_api_url(self) -> str:
        """--api, or the first gateway's origin (a gateway proxies /api)."""
        if self.api_url:
            return self.api_url.rstrip("/")
        parts = urlsplit(self.urls[0])
        scheme = "https" if parts.scheme == "wss" else "http"
        return urlunsplit((scheme, parts.netloc, "", "", ""))

    def send_allowance_s(self) -> float:
        """How long sending may take: --duration-s, or as fast as a slow
        target goes (50 orders/s through the API, 1,000 events/s to the bus)."""
        if self.source == "api":
            floor_s = self.users * self.orders_per_user / 50
        else:
            floor_s = self.users * self.events_per_user / 1000
        return max(self.duration_s, floor_s) + 10.0

    def hard_deadline_s(self) -> float:
        """Nothing a run does lasts longer than this, whatever happens."""
        return (
            self.ramp_s
            + self.connect_timeout_s
            + self.send_allowance_s()
            + self.timeout_s
            + self.settle_s
            + 30.0
        )

    # -- checks ------------------------------------------------------------

    def validated(self) -> LoadtestConfig:
        """Raise UsageError naming the flag of the first bad value."""
        _check_range("--users", self.users, 1, MAX_USERS)
        _check_range(
            "--connections-per-user", self.connections_per_user, 1, MAX_CONNECTIONS_PER_USER
        )
        _check_range("--events-per-user", self.events_per_user, 1, MAX_EVENTS_PER_USER)
        _check_range("--versions-per-order", self.versions_per_order, 1, MAX_VERSIONS_PER_ORDER)
        if self.source == "api" and self.versions_per_order != 2:
            raise UsageError(
                "--versions-per-order",
                "only for --source bus (an order placed through the API has 2 versions)",
            )
        if self.connections > MAX_CONNECTIONS:
            raise UsageError(
                "--users/--connections-per-user",
                f"{self.connections} connections; at most {MAX_CONNECTIONS}",
            )
        if self.deliveries > MAX_DELIVERIES:
            raise UsageError(
                "--events-per-user",
                f"{self.deliveries} deliveries (users x connections x events); "
                f"at most {MAX_DELIVERIES}",
            )
        _check_seconds("--duration-s", self.duration_s, MAX_DURATION_S, zero_ok=True)
        _check_seconds("--timeout-s", self.timeout_s, MAX_TIMEOUT_S)
        _check_seconds("--ramp-s", self.ramp_s, MAX_RAMP_S, zero_ok=True)
        _check_seconds("--connect-timeout-s", self.connect_timeout_s, 300.0)
        _check_seconds("--settle-s", self.settle_s, 60.0, zero_ok=True)
        _check_range("--max-reconnects", self.max_reconnects, 0, 100)
        _check_range("--connect-concurrency", self.connect_concurrency, 1, 10_000)
        _check_range("--api-concurrency", self.api_concurrency, 1, 1_000)
        if not self.urls:
            raise UsageError("--url", "give at least one gateway WebSocket URL")
        for url in self.urls:
            _check_target("--url", url, ("ws", "wss"))
        if len(self.secret) < 32:
            raise UsageError(
                "--secret", "the HS256 secret must be at least 32 characters (ORDERPUSH_JWT_SECRET)"
            )
        if self.source == "bus":
            _check_bus(self.bus_url)
        else:
            _check_target("--api", self.effective_api_url(), ("http", "https"))
        return self


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(flag, f"{value} is not between {low} and {high}")


def _check_seconds(flag: str, value: float, high: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > high:
        low = ">= 0" if zero_ok else "> 0"
        raise UsageError(flag, f"{value} must be {low} and at most {high:g} seconds")


def _check_target(flag: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise UsageError(flag, f"{url!r} must start with {allowed}")
    if not parts.hostname:
        raise UsageError(flag, f"{url!r} names no host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(flag, f"{url!r} has a bad port") from None
    if not is_loopback(parts.hostname):
        raise UsageError(flag, f"{parts.hostname!r} is not a loopback address (127.0.0.1, ::1)")


def _check_bus(bus_url: str | None) -> None:
    if not bus_url:
        raise UsageError("--bus", "--source bus needs kafka://HOST:PORT (or ORDERPUSH_BUS)")
    parts = urlsplit(bus_url)
    if parts.scheme == "memory":
        raise UsageError(
            "--bus",
            "memory:// lives inside one process and cannot reach a gateway; "
            "--source bus needs kafka://HOST:PORT (or use --source api)",
        )
    if parts.scheme != "kafka" or not parts.netloc:
        raise UsageError("--bus", f"{bus_url!r} must be kafka://HOST:PORT[,HOST:PORT]")
    for broker in parts.netloc.split(","):
        host, _, port = broker.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise UsageError("--bus", f"broker {broker!r} is not HOST:PORT")
        if not is_loopback(host):
            raise UsageError("--bus", f"{host!r} is not a loopback address (127.0.0.1, ::1)")


def is_loopback(host: str) -> bool:
    """True for loopback literals and for names that resolve only to loopback."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0])).is_loopback for i in infos)
