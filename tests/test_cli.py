"""The command line: bad flags and variables stop it with a message naming them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.settings import DEV_SECRET, ConfigError, settings_from_env
from orderpush.cli import build_parser, load_settings, main
from orderpush_core.auth import TokenVerifier
from tests.harness import ROOT


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["gateway", "--bus", "foo://x"], {}, "--bus / ORDERPUSH_BUS"),
        (["gateway", "--sessions", "postgres://db"], {}, "--sessions / ORDERPUSH_SESSIONS"),
        (["gateway", "--bus", "kafka://"], {}, "names no host"),
        (["gateway", "--port", "99999"], {}, "--port"),
        (["gateway"], {"ORDERPUSH_HEARTBEAT_S": "soon"}, "ORDERPUSH_HEARTBEAT_S"),
        (["gateway"], {"ORDERPUSH_SEND_QUEUE_MAX": "0"}, "ORDERPUSH_SEND_QUEUE_MAX"),
        (["gateway"], {"ORDERPUSH_DEV_MODE": "maybe"}, "ORDERPUSH_DEV_MODE"),
        (["gateway"], {"ORDERPUSH_JWT_SECRET": "short"}, "ORDERPUSH_JWT_SECRET"),
        (["gateway"], {"ORDERPUSH_JWT_ALGORITHM": "RS256"}, "ORDERPUSH_JWT_PUBLIC_KEY"),
        (["gateway"], {"ORDERPUSH_SESSION_KEY_PREFIX": "a{b}"}, "ORDERPUSH_SESSION_KEY_PREFIX"),
        (["stubs", "--only", "payment,teleport"], {"ORDERPUSH_DEV_MODE": "true"}, "--only"),
        (["token", "alice", "--ttl", "-5"], {}, "--ttl"),
        (["demo", "--port", "http"], {}, "--port"),
    ],
)
def test_bad_value_stops_with_a_message_naming_it(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_secret_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORDERPUSH_JWT_SECRET", "ORDERPUSH_DEV_MODE", "ORDERPUSH_JWT_PUBLIC_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_token_prints_a_token_for_the_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERPUSH_DEV_MODE", "true")
    assert main(["token", "alice", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(DEV_SECRET).verify(token)
    assert claims.user_id == "alice"


def test_token_carries_the_configured_audience_and_issuer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERPUSH_DEV_MODE", "true")
    monkeypatch.setenv("ORDERPUSH_JWT_AUDIENCE", "shop")
    monkeypatch.setenv("ORDERPUSH_JWT_ISSUER", "https://login.shop.example")
    assert main(["token", "bob"]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(DEV_SECRET, audience="shop", issuer="https://login.shop.example")
    assert verifier.verify(token).user_id == "bob"


@pytest.mark.parametrize("command", [["gateway"], ["stubs"], ["token", "alice"]])
def test_no_secret_outside_dev_mode_stops_with_a_message_naming_it(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(command)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "ORDERPUSH_JWT_SECRET is not set" in err and "ORDERPUSH_DEV_MODE" in err


def test_the_real_gateway_process_refuses_to_start_without_a_secret() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "orderpush", "gateway", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"ORDERPUSH_JWT_SECRET is not set" in done.stderr


def test_dev_mode_falls_back_to_the_dev_secret_and_a_set_secret_wins() -> None:
    assert settings_from_env({"ORDERPUSH_DEV_MODE": "true"}).validated().jwt_secret == DEV_SECRET
    secret = "s" * 40
    env = {"ORDERPUSH_DEV_MODE": "true", "ORDERPUSH_JWT_SECRET": secret}
    assert settings_from_env(env).validated().jwt_secret == secret
    public_key_env = {"ORDERPUSH_JWT_ALGORITHM": "ES256", "ORDERPUSH_JWT_JWKS_URL": "http://idp/"}
    assert settings_from_env(public_key_env).validated().jwt_jwks_url == "http://idp/"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ORDERPUSH_JWT_JWKS_URL": "http://idp/"}, "ORDERPUSH_JWT_ALGORITHM=RS256"),
        ({"ORDERPUSH_JWT_ALGORITHM": "RS256", "ORDERPUSH_JWT_JWKS_URL": "ftp://x"}, "JWKS_URL"),
        ({"ORDERPUSH_JWT_SECRET": "s" * 40, "ORDERPUSH_JWT_LEEWAY_S": "-1"}, "LEEWAY_S"),
    ],
)
def test_bad_jwt_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings_from_env(env).validated()


def test_demo_on_a_public_address_needs_the_flag_that_says_what_it_exposes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["demo", "--host", "0.0.0.0"])
    assert stopped.value.code == 2
    assert "--expose-dev-sign-in" in capsys.readouterr().err
    args = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--expose-dev-sign-in"])
    settings = load_settings(args)
    assert settings.dev_mode and settings.jwt_secret == DEV_SECRET
    loopback = load_settings(build_parser().parse_args(["demo"]))
    assert loopback.dev_mode
