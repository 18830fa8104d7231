"""Configuration from flags and ORDERPUSH_* environment variables.

Every value is checked at start; a bad one raises ConfigError naming the
flag or variable, so an operator never finds out at the first connection.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from orderpush_core.auth import TokenVerifier
from orderpush_core.jwks import JwksKeys

#: Public in the source: only ever used with dev mode on (or by tests that
#: build Settings in process); the command line refuses to start on it otherwise.
DEV_SECRET = "orderpush-dev-secret-change-me-0123456789"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_ADMIN_PORT = 9000


class ConfigError(ValueError):
    """A configuration value is invalid; the message names flag and variable."""


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Settings:
    bus_url: str = "memory://"
    sessions_url: str = "memory://"
    topic_prefix: str = ""
    session_key_prefix: str = "orderpush"
    consumer_group: str = "gateway"
    instance_id: str = field(default_factory=_default_instance_id)
    jwt_secret: str = DEV_SECRET
    jwt_algorithm: str = "HS256"
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_s: float = 300.0
    jwt_jwks_min_refresh_s: float = 10.0
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = 0.0
    dev_mode: bool = False
    dev_token_ttl_s: float = 3600.0
    allowed_origins: tuple[str, ...] = ()
    storefront_url: str | None = None
    admin_host: str = "127.0.0.1"
    #: None: no admin listener (apps built in process, tests). The command
    #: line's default is DEFAULT_ADMIN_PORT.
    admin_port: int | None = None
    heartbeat_s: float = 25.0
    auth_timeout_s: float = 10.0
    auth_grace_s: float = 0.25
    lease_ttl_s: float = 30.0
    history_max: int = 1000
    #: A user's history and view expire after this long without an event.
    history_idle_s: float = 7 * 86_400.0
    send_queue_max: int = 1000
    #: Event frames written straight to the transport (gateway/direct_frames.py).
    direct_frames: bool = True
    max_message_bytes: int = 64 * 1024
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    batch_max: int = 500
    # -- limits (docs/operations.md, "Hardening") --
    max_sockets_per_user: int = 20
    handshakes_per_s: float = 20.0
    handshake_burst: int = 40
    #: Addresses the handshake rate does not apply to (local tools, load tests).
    limit_exempt_addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    max_unauthenticated: int = 2000
    resumes_per_minute: int = 10
    orders_per_minute: int = 60
    proxy_max_body_bytes: int = 64 * 1024
    kafka_session_timeout_ms: int = 3_000
    kafka_heartbeat_ms: int = 500
    #: Join the consumer group as a static member under the instance id, so a
    #: restarted instance (same --instance-id) takes its partitions back at
    #: once instead of after the dead process's session timeout.
    kafka_static_members: bool = True
    drain_window_s: float = 5.0

    @property
    def verify_key(self) -> str:
        return self.jwt_public_key if self.jwt_public_key else self.jwt_secret

    def token_verifier(self) -> TokenVerifier:
        """One verifier for the gateway and the storefront API alike."""
        jwks = None
        if self.jwt_jwks_url:
            jwks = JwksKeys(
                self.jwt_jwks_url,
                self.jwt_algorithm,
                cache_s=self.jwt_jwks_cache_s,
                min_refresh_s=self.jwt_jwks_min_refresh_s,
            )
        return TokenVerifier(
            self.verify_key,
            self.jwt_algorithm,
            audience=self.jwt_audience,
            issuer=self.jwt_issuer,
            leeway_s=self.jwt_leeway_s,
            jwks=jwks,
        )

    def validated(self) -> Settings:
        check_url("--bus", "ORDERPUSH_BUS", self.bus_url, ("memory", "kafka"))
        check_url(
            "--sessions", "ORDERPUSH_SESSIONS", self.sessions_url, ("memory", "redis", "rediss")
        )
        if not self.session_key_prefix or set("{} ") & set(self.session_key_prefix):
            raise ConfigError(
                f"ORDERPUSH_SESSION_KEY_PREFIX: {self.session_key_prefix!r} must be non-empty, "
                "without braces or spaces"
            )
        if self.storefront_url is not None:
            check_url(
                "--storefront-url",
                "ORDERPUSH_STOREFRONT_URL",
                self.storefront_url,
                ("http", "https"),
            )
        if self.admin_port is not None and not 0 < self.admin_port < 65536:
            raise ConfigError(
                f"--admin-port / ORDERPUSH_ADMIN_PORT: {self.admin_port} is not between 1 and 65535"
            )
        if not self.admin_host:
            raise ConfigError("--admin-host / ORDERPUSH_ADMIN_HOST must not be empty")
        if self.jwt_algorithm not in ("HS256", "RS256", "ES256"):
            raise ConfigError(
                f"ORDERPUSH_JWT_ALGORITHM: {self.jwt_algorithm!r} is not one of HS256, RS256, ES256"
            )
        if self.jwt_algorithm != "HS256" and not (self.jwt_public_key or self.jwt_jwks_url):
            raise ConfigError(
                "ORDERPUSH_JWT_PUBLIC_KEY or ORDERPUSH_JWT_JWKS_URL is required with "
                f"ORDERPUSH_JWT_ALGORITHM={self.jwt_algorithm}"
            )
        if self.jwt_algorithm == "HS256" and (self.jwt_public_key or self.jwt_jwks_url):
            raise ConfigError(
                "ORDERPUSH_JWT_PUBLIC_KEY / ORDERPUSH_JWT_JWKS_URL need "
                "ORDERPUSH_JWT_ALGORITHM=RS256 or ES256"
            )
        if self.jwt_public_key and self.jwt_jwks_url:
            raise ConfigError("set ORDERPUSH_JWT_PUBLIC_KEY or ORDERPUSH_JWT_JWKS_URL, not both")
        if self.jwt_jwks_url:
            check_url("ORDERPUSH_JWT_JWKS_URL", "", self.jwt_jwks_url, ("http", "https"))
        if self.jwt_algorithm == "HS256" and self.jwt_secret and len(self.jwt_secret) < 32:
            raise ConfigError("ORDERPUSH_JWT_SECRET must be at least 32 characters for HS256")
        if self.jwt_leeway_s < 0:
            raise ConfigError(f"ORDERPUSH_JWT_LEEWAY_S must be >= 0, got {self.jwt_leeway_s}")
        for name, value in (
            ("ORDERPUSH_HEARTBEAT_S", self.heartbeat_s),
            ("ORDERPUSH_AUTH_TIMEOUT_S", self.auth_timeout_s),
            ("ORDERPUSH_AUTH_GRACE_S", self.auth_grace_s),
            ("ORDERPUSH_LEASE_TTL_S", self.lease_ttl_s),
            ("ORDERPUSH_HISTORY_MAX", self.history_max),
            ("ORDERPUSH_HISTORY_IDLE_S", self.history_idle_s),
            ("ORDERPUSH_SEND_QUEUE_MAX", self.send_queue_max),
            ("ORDERPUSH_MAX_MESSAGE_BYTES", self.max_message_bytes),
            ("ORDERPUSH_RATE_LIMIT_PER_S", self.rate_limit_per_s),
            ("ORDERPUSH_RATE_LIMIT_BURST", self.rate_limit_burst),
            ("ORDERPUSH_JWT_JWKS_CACHE_S", self.jwt_jwks_cache_s),
            ("ORDERPUSH_JWT_JWKS_MIN_REFRESH_S", self.jwt_jwks_min_refresh_s),
            ("ORDERPUSH_DEV_TOKEN_TTL_S", self.dev_token_ttl_s),
            ("ORDERPUSH_MAX_SOCKETS_PER_USER", self.max_sockets_per_user),
            ("ORDERPUSH_HANDSHAKES_PER_S", self.handshakes_per_s),
            ("ORDERPUSH_HANDSHAKE_BURST", self.handshake_burst),
            ("ORDERPUSH_MAX_UNAUTHENTICATED", self.max_unauthenticated),
            ("ORDERPUSH_RESUMES_PER_MINUTE", self.resumes_per_minute),
            ("ORDERPUSH_ORDERS_PER_MINUTE", self.orders_per_minute),
            ("ORDERPUSH_PROXY_MAX_BODY_BYTES", self.proxy_max_body_bytes),
            ("ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS", self.kafka_session_timeout_ms),
            ("ORDERPUSH_KAFKA_HEARTBEAT_MS", self.kafka_heartbeat_ms),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.drain_window_s < 0:
            raise ConfigError(f"ORDERPUSH_DRAIN_WINDOW_S must be >= 0, got {self.drain_window_s}")
        if self.jwt_algorithm == "HS256" and not self.jwt_secret:
            if not self.dev_mode:
                raise ConfigError(
                    "ORDERPUSH_JWT_SECRET is not set: set it to a random secret of 32 characters "
                    "or more (or use ORDERPUSH_JWT_ALGORITHM=RS256/ES256 with "
                    "ORDERPUSH_JWT_PUBLIC_KEY or ORDERPUSH_JWT_JWKS_URL); only "
                    "ORDERPUSH_DEV_MODE=true falls back to the public development secret"
                )
            return replace(self, jwt_secret=DEV_SECRET)
        return self

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def check_url(flag: str, env: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    name = f"{flag} / {env}" if env else flag
    if parts.scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name}: {url!r} must start with one of {allowed}")
    if parts.scheme in ("kafka", "redis", "rediss", "http", "https") and not parts.netloc:
        raise ConfigError(f"{name}: {url!r} names no host")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (true/false)")


def _addresses(env: Mapping[str, str], default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get("ORDERPUSH_LIMIT_EXEMPT_ADDRESSES")
    if raw is None:
        return default
    return tuple(a.strip() for a in raw.split(",") if a.strip())


def _admin_port(env: Mapping[str, str]) -> int | None:
    raw = env.get("ORDERPUSH_ADMIN_PORT") or str(DEFAULT_ADMIN_PORT)
    if raw.lower() == "off":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"ORDERPUSH_ADMIN_PORT: {raw!r} is not a port number or off") from None


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ORDERPUSH_* variables (flags are applied on top by the CLI)."""
    env = os.environ if env is None else env
    base = Settings()
    origins = tuple(
        o.strip() for o in env.get("ORDERPUSH_ALLOWED_ORIGINS", "").split(",") if o.strip()
    )
    return Settings(
        bus_url=env.get("ORDERPUSH_BUS", base.bus_url),
        sessions_url=env.get("ORDERPUSH_SESSIONS", base.sessions_url),
        topic_prefix=env.get("ORDERPUSH_TOPIC_PREFIX", base.topic_prefix),
        session_key_prefix=env.get("ORDERPUSH_SESSION_KEY_PREFIX") or base.session_key_prefix,
        consumer_group=env.get("ORDERPUSH_CONSUMER_GROUP", base.consumer_group),
        instance_id=env.get("ORDERPUSH_INSTANCE_ID") or base.instance_id,
        # No fallback here: unset means "" and `validated` refuses it outside dev mode.
        jwt_secret=env.get("ORDERPUSH_JWT_SECRET", ""),
        jwt_algorithm=env.get("ORDERPUSH_JWT_ALGORITHM", base.jwt_algorithm),
        jwt_public_key=env.get("ORDERPUSH_JWT_PUBLIC_KEY") or None,
        jwt_jwks_url=env.get("ORDERPUSH_JWT_JWKS_URL") or None,
        jwt_jwks_cache_s=_float(env, "ORDERPUSH_JWT_JWKS_CACHE_S", base.jwt_jwks_cache_s),
        jwt_jwks_min_refresh_s=_float(
            env, "ORDERPUSH_JWT_JWKS_MIN_REFRESH_S", base.jwt_jwks_min_refresh_s
        ),
        jwt_audience=env.get("ORDERPUSH_JWT_AUDIENCE") or None,
        jwt_issuer=env.get("ORDERPUSH_JWT_ISSUER") or None,
        jwt_leeway_s=_float(env, "ORDERPUSH_JWT_LEEWAY_S", base.jwt_leeway_s),
        dev_mode=_bool(env, "ORDERPUSH_DEV_MODE", base.dev_mode),
        dev_token_ttl_s=_float(env, "ORDERPUSH_DEV_TOKEN_TTL_S", base.dev_token_ttl_s),
        allowed_origins=origins,
        storefront_url=env.get("ORDERPUSH_STOREFRONT_URL") or None,
        admin_host=env.get("ORDERPUSH_ADMIN_HOST") or base.admin_host,
        admin_port=_admin_port(env),
        heartbeat_s=_float(env, "ORDERPUSH_HEARTBEAT_S", base.heartbeat_s),
        auth_timeout_s=_float(env, "ORDERPUSH_AUTH_TIMEOUT_S", base.auth_timeout_s),
        auth_grace_s=_float(env, "ORDERPUSH_AUTH_GRACE_S", base.auth_grace_s),
        lease_ttl_s=_float(env, "ORDERPUSH_LEASE_TTL_S", base.lease_ttl_s),
        history_max=_int(env, "ORDERPUSH_HISTORY_MAX", base.history_max),
        history_idle_s=_float(env, "ORDERPUSH_HISTORY_IDLE_S", base.history_idle_s),
        send_queue_max=_int(env, "ORDERPUSH_SEND_QUEUE_MAX", base.send_queue_max),
        direct_frames=_bool(env, "ORDERPUSH_DIRECT_FRAMES", base.direct_frames),
        max_message_bytes=_int(env, "ORDERPUSH_MAX_MESSAGE_BYTES", base.max_message_bytes),
        rate_limit_per_s=_float(env, "ORDERPUSH_RATE_LIMIT_PER_S", base.rate_limit_per_s),
        rate_limit_burst=_int(env, "ORDERPUSH_RATE_LIMIT_BURST", base.rate_limit_burst),
        max_sockets_per_user=_int(env, "ORDERPUSH_MAX_SOCKETS_PER_USER", base.max_sockets_per_user),
        handshakes_per_s=_float(env, "ORDERPUSH_HANDSHAKES_PER_S", base.handshakes_per_s),
        handshake_burst=_int(env, "ORDERPUSH_HANDSHAKE_BURST", base.handshake_burst),
        limit_exempt_addresses=_addresses(env, base.limit_exempt_addresses),
        max_unauthenticated=_int(env, "ORDERPUSH_MAX_UNAUTHENTICATED", base.max_unauthenticated),
        resumes_per_minute=_int(env, "ORDERPUSH_RESUMES_PER_MINUTE", base.resumes_per_minute),
        orders_per_minute=_int(env, "ORDERPUSH_ORDERS_PER_MINUTE", base.orders_per_minute),
        proxy_max_body_bytes=_int(env, "ORDERPUSH_PROXY_MAX_BODY_BYTES", base.proxy_max_body_bytes),
        kafka_session_timeout_ms=_int(
            env, "ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS", base.kafka_session_timeout_ms
        ),
        kafka_heartbeat_ms=_int(env, "ORDERPUSH_KAFKA_HEARTBEAT_MS", base.kafka_heartbeat_ms),
        kafka_static_members=_bool(
            env, "ORDERPUSH_KAFKA_STATIC_MEMBERS", base.kafka_static_members
        ),
        drain_window_s=_float(env, "ORDERPUSH_DRAIN_WINDOW_S", base.drain_window_s),
    )
