"""Unit tests of gateway/settings.py: every ORDERPUSH_* variable, every refusal named."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.settings import (
    DEFAULT_ADMIN_PORT,
    DEV_SECRET,
    ConfigError,
    Settings,
    settings_from_env,
)

SECRET = "s" * 40

#: variable -> (raw value, Settings field, parsed value); none equals the default.
PARSED: dict[str, tuple[str, str, Any]] = {
    "ORDERPUSH_BUS": ("kafka://k:9092", "bus_url", "kafka://k:9092"),
    "ORDERPUSH_SESSIONS": ("redis://r:6379/0", "sessions_url", "redis://r:6379/0"),
    "ORDERPUSH_TOPIC_PREFIX": ("t1.", "topic_prefix", "t1."),
    "ORDERPUSH_SESSION_KEY_PREFIX": ("op2", "session_key_prefix", "op2"),
    "ORDERPUSH_CONSUMER_GROUP": ("gw2", "consumer_group", "gw2"),
    "ORDERPUSH_INSTANCE_ID": ("node-7", "instance_id", "node-7"),
    "ORDERPUSH_JWT_SECRET": ("x" * 33, "jwt_secret", "x" * 33),
    "ORDERPUSH_JWT_ALGORITHM": ("RS256", "jwt_algorithm", "RS256"),
    "ORDERPUSH_JWT_PUBLIC_KEY": ("PEM", "jwt_public_key", "PEM"),
    "ORDERPUSH_JWT_JWKS_URL": ("https://idp/jwks", "jwt_jwks_url", "https://idp/jwks"),
    "ORDERPUSH_JWT_JWKS_CACHE_S": ("60.5", "jwt_jwks_cache_s", 60.5),
    "ORDERPUSH_JWT_JWKS_MIN_REFRESH_S": ("2", "jwt_jwks_min_refresh_s", 2.0),
    "ORDERPUSH_JWT_AUDIENCE": ("shop", "jwt_audience", "shop"),
    "ORDERPUSH_JWT_ISSUER": ("https://idp/", "jwt_issuer", "https://idp/"),
    "ORDERPUSH_JWT_LEEWAY_S": ("1.5", "jwt_leeway_s", 1.5),
    "ORDERPUSH_DEV_MODE": ("yes", "dev_mode", True),
    "ORDERPUSH_DEV_TOKEN_TTL_S": ("120", "dev_token_ttl_s", 120.0),
    "ORDERPUSH_ALLOWED_ORIGINS": (
        " https://a.example , ,https://b.example",
        "allowed_origins",
        ("https://a.example", "https://b.example"),
    ),
    "ORDERPUSH_STOREFRONT_URL": ("http://shop:8001", "storefront_url", "http://shop:8001"),
    "ORDERPUSH_ADMIN_HOST": ("0.0.0.0", "admin_host", "0.0.0.0"),
    "ORDERPUSH_ADMIN_PORT": ("9100", "admin_port", 9100),
    "ORDERPUSH_HEARTBEAT_S": ("5", "heartbeat_s", 5.0),
    "ORDERPUSH_AUTH_TIMEOUT_S": ("3.5", "auth_timeout_s", 3.5),
    "ORDERPUSH_AUTH_GRACE_S": ("0.5", "auth_grace_s", 0.5),
    "ORDERPUSH_LEASE_TTL_S": ("12", "lease_ttl_s", 12.0),
    "ORDERPUSH_HISTORY_MAX": ("50", "history_max", 50),
    "ORDERPUSH_HISTORY_IDLE_S": ("3600", "history_idle_s", 3600.0),
    "ORDERPUSH_SEND_QUEUE_MAX": ("64", "send_queue_max", 64),
    "ORDERPUSH_MAX_MESSAGE_BYTES": ("1024", "max_message_bytes", 1024),
    "ORDERPUSH_RATE_LIMIT_PER_S": ("2.5", "rate_limit_per_s", 2.5),
    "ORDERPUSH_RATE_LIMIT_BURST": ("7", "rate_limit_burst", 7),
    "ORDERPUSH_MAX_SOCKETS_PER_USER": ("3", "max_sockets_per_user", 3),
    "ORDERPUSH_HANDSHAKES_PER_S": ("4.5", "handshakes_per_s", 4.5),
    "ORDERPUSH_HANDSHAKE_BURST": ("9", "handshake_burst", 9),
    "ORDERPUSH_LIMIT_EXEMPT_ADDRESSES": (
        "10.0.0.1, ::2",
        "limit_exempt_addresses",
        ("10.0.0.1", "::2"),
    ),
    "ORDERPUSH_MAX_UNAUTHENTICATED": ("11", "max_unauthenticated", 11),
    "ORDERPUSH_RESUMES_PER_MINUTE": ("4", "resumes_per_minute", 4),
    "ORDERPUSH_ORDERS_PER_MINUTE": ("8", "orders_per_minute", 8),
    "ORDERPUSH_PROXY_MAX_BODY_BYTES": ("2048", "proxy_max_body_bytes", 2048),
    "ORDERPUSH_KAFKA_SESSION_TIMEOUT_MS": ("6000", "kafka_session_timeout_ms", 6000),
    "ORDERPUSH_KAFKA_HEARTBEAT_MS": ("250", "kafka_heartbeat_ms", 250),
    "ORDERPUSH_KAFKA_STATIC_MEMBERS": ("off", "kafka_static_members", False),
    "ORDERPUSH_DIRECT_FRAMES": ("off", "direct_frames", False),
    "ORDERPUSH_DRAIN_WINDOW_S": ("0", "drain_window_s", 0.0),
}

FLOATS = [name for name, (_, _, v) in PARSED.items() if isinstance(v, float)]
INTS = [
    name for name, (_, _, v) in PARSED.items() if type(v) is int and name != "ORDERPUSH_ADMIN_PORT"
]
#: Checked by `validated` to be > 0.
POSITIVE = [
    name
    for name in FLOATS + INTS
    if name not in ("ORDERPUSH_JWT_LEEWAY_S", "ORDERPUSH_DRAIN_WINDOW_S")
]


def test_the_table_covers_every_field_that_comes_from_the_environment() -> None:
    from_env = {field for _, field, _ in PARSED.values()}
    # batch_max has no variable (nor a documented one): only code sets it.
    assert from_env == set(Settings.__dataclass_fields__) - {"batch_max"}
    assert len(POSITIVE) == 22


@pytest.mark.parametrize("name", sorted(PARSED))
def test_each_variable_is_parsed_into_its_field(name: str) -> None:
    raw, field, expected = PARSED[name]
    default = getattr(settings_from_env({}), field)
    assert expected != default, "the table must use a value that differs from the default"
    parsed = getattr(settings_from_env({name: raw}), field)
    assert parsed == expected and type(parsed) is type(expected)


def test_unset_variables_give_the_defaults() -> None:
    settings = settings_from_env({})
    assert settings.jwt_secret == ""  # unset is refused by `validated` outside dev mode
    assert settings.admin_port == DEFAULT_ADMIN_PORT
    assert settings.limit_exempt_addresses == ("127.0.0.1", "::1")
    default = Settings()
    for field in Settings.__dataclass_fields__:
        if field not in ("jwt_secret", "admin_port", "instance_id"):
            assert getattr(settings, field) == getattr(default, field), field


def test_empty_numeric_variables_fall_back_to_the_default() -> None:
    env = {name: "" for name in FLOATS + INTS}
    pinned = {"ORDERPUSH_INSTANCE_ID": "i1"}
    assert settings_from_env({**env, **pinned}) == settings_from_env(pinned)


def test_the_admin_listener_can_be_turned_off() -> None:
    assert settings_from_env({"ORDERPUSH_ADMIN_PORT": "OFF"}).admin_port is None


def test_an_empty_exempt_list_exempts_nobody() -> None:
    assert settings_from_env({"ORDERPUSH_LIMIT_EXEMPT_ADDRESSES": ""}).limit_exempt_addresses == ()


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on"])
def test_true_spellings(raw: str) -> None:
    assert settings_from_env({"ORDERPUSH_DEV_MODE": raw}).dev_mode is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_false_spellings(raw: str) -> None:
    assert settings_from_env({"ORDERPUSH_DEV_MODE": raw}).dev_mode is False


def test_a_bad_boolean_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^ORDERPUSH_DEV_MODE: 'maybe' is not a boolean"):
        settings_from_env({"ORDERPUSH_DEV_MODE": "maybe"})


@pytest.mark.parametrize("name", FLOATS)
def test_a_float_that_is_no_number_is_named(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}: 'fast' is not a number$"):
        settings_from_env({name: "fast"})


@pytest.mark.parametrize("name", INTS)
def test_an_int_that_is_no_integer_is_named(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}: '2.5' is not an integer$"):
        settings_from_env({name: "2.5"})


def test_a_bad_admin_port_is_named() -> None:
    with pytest.raises(
        ConfigError, match=r"^ORDERPUSH_ADMIN_PORT: 'x' is not a port number or off"
    ):
        settings_from_env({"ORDERPUSH_ADMIN_PORT": "x"})


def checked(**env: str) -> Settings:
    return settings_from_env({"ORDERPUSH_JWT_SECRET": SECRET, **env}).validated()


def test_a_sound_configuration_passes_unchanged() -> None:
    settings = settings_from_env({"ORDERPUSH_JWT_SECRET": SECRET})
    assert settings.validated() is settings


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("raw", ["0", "-1"])
def test_a_value_that_must_be_positive_is_named(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must be > 0, got -?[0-9.]+$"):
        checked(**{name: raw})


@pytest.mark.parametrize("name", ["ORDERPUSH_JWT_LEEWAY_S", "ORDERPUSH_DRAIN_WINDOW_S"])
def test_a_value_that_may_be_zero_but_not_negative_is_named(name: str) -> None:
    assert getattr(checked(**{name: "0"}), PARSED[name][1]) == 0.0
    with pytest.raises(ConfigError, match=rf"^{name} must be >= 0, got -0.5$"):
        checked(**{name: "-0.5"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"ORDERPUSH_BUS": "nats://x"},
            r"^--bus / ORDERPUSH_BUS: 'nats://x' must start with one of memory://, kafka://$",
        ),
        ({"ORDERPUSH_BUS": "kafka://"}, r"^--bus / ORDERPUSH_BUS: 'kafka://' names no host$"),
        (
            {"ORDERPUSH_SESSIONS": "memcached://m"},
            r"^--sessions / ORDERPUSH_SESSIONS: .* memory://, redis://, rediss://$",
        ),
        (
            {"ORDERPUSH_SESSIONS": "redis://"},
            r"^--sessions / ORDERPUSH_SESSIONS: 'redis://' names no host$",
        ),
        (
            {"ORDERPUSH_STOREFRONT_URL": "shop:8001"},
            r"^--storefront-url / ORDERPUSH_STOREFRONT_URL: ",
        ),
        (
            {"ORDERPUSH_SESSION_KEY_PREFIX": "a{b}"},
            r"^ORDERPUSH_SESSION_KEY_PREFIX: 'a\{b\}' must be non-empty",
        ),
        ({"ORDERPUSH_SESSION_KEY_PREFIX": "a b"}, r"^ORDERPUSH_SESSION_KEY_PREFIX: 'a b'"),
        (
            {"ORDERPUSH_ADMIN_PORT": "70000"},
            r"^--admin-port / ORDERPUSH_ADMIN_PORT: 70000 is not between 1 and 65535$",
        ),
        ({"ORDERPUSH_ADMIN_PORT": "-3"}, r"^--admin-port / ORDERPUSH_ADMIN_PORT: -3 "),
        (
            {"ORDERPUSH_JWT_ALGORITHM": "none"},
            r"^ORDERPUSH_JWT_ALGORITHM: 'none' is not one of HS256, RS256, ES256$",
        ),
        (
            {"ORDERPUSH_JWT_ALGORITHM": "ES256"},
            r"^ORDERPUSH_JWT_PUBLIC_KEY or ORDERPUSH_JWT_JWKS_URL is required with "
            r"ORDERPUSH_JWT_ALGORITHM=ES256$",
        ),
        (
            {"ORDERPUSH_JWT_PUBLIC_KEY": "PEM"},
            r"^ORDERPUSH_JWT_PUBLIC_KEY / ORDERPUSH_JWT_JWKS_URL need "
            r"ORDERPUSH_JWT_ALGORITHM=RS256 or ES256$",
        ),
        (
            {
                "ORDERPUSH_JWT_ALGORITHM": "RS256",
                "ORDERPUSH_JWT_PUBLIC_KEY": "PEM",
                "ORDERPUSH_JWT_JWKS_URL": "https://idp/",
            },
            r"^set ORDERPUSH_JWT_PUBLIC_KEY or ORDERPUSH_JWT_JWKS_URL, not both$",
        ),
        (
            {"ORDERPUSH_JWT_ALGORITHM": "RS256", "ORDERPUSH_JWT_JWKS_URL": "https://"},
            r"^ORDERPUSH_JWT_JWKS_URL: 'https://' names no host$",
        ),
        (
            {"ORDERPUSH_JWT_SECRET": "short"},
            r"^ORDERPUSH_JWT_SECRET must be at least 32 characters for HS256$",
        ),
    ],
)
def test_each_refusal_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        checked(**env)


def test_an_unset_secret_is_refused_outside_dev_mode_and_named() -> None:
    with pytest.raises(ConfigError, match=r"^ORDERPUSH_JWT_SECRET is not set"):
        settings_from_env({}).validated()
    assert settings_from_env({"ORDERPUSH_DEV_MODE": "1"}).validated().jwt_secret == DEV_SECRET


def test_an_empty_admin_host_is_refused() -> None:
    settings = Settings(admin_host="")
    with pytest.raises(
        ConfigError, match=r"^--admin-host / ORDERPUSH_ADMIN_HOST must not be empty$"
    ):
        settings.validated()


def test_the_verify_key_is_the_public_key_when_there_is_one() -> None:
    assert Settings(jwt_secret=SECRET).verify_key == SECRET
    assert Settings(jwt_secret=SECRET, jwt_public_key="PEM").verify_key == "PEM"


def test_overrides_skip_unset_flags() -> None:
    base = Settings(heartbeat_s=5.0)
    changed = base.with_overrides(heartbeat_s=None, history_max=7)
    assert (changed.heartbeat_s, changed.history_max) == (5.0, 7)
