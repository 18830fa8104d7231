"""The command line: bad flags and variables stop it with a message naming them."""

from __future__ import annotations

import pytest

from gateway.auth import TokenVerifier
from gateway.cli import main
from gateway.settings import DEV_SECRET


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
        (["stubs", "--only", "payment,teleport"], {}, "--only"),
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


def test_token_prints_a_token_for_the_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "alice", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(DEV_SECRET).verify(token)
    assert claims.user_id == "alice"


def test_token_carries_the_configured_audience_and_issuer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERPUSH_JWT_AUDIENCE", "shop")
    monkeypatch.setenv("ORDERPUSH_JWT_ISSUER", "https://login.shop.example")
    assert main(["token", "bob"]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier(DEV_SECRET, audience="shop", issuer="https://login.shop.example")
    assert verifier.verify(token).user_id == "bob"
