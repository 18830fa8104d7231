"""`Hs256Verifier` (orderpush_core/hs256.py) against PyJWT itself: on valid
and broken tokens, both accept the same ones with the same claims and
refuse the same ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from orderpush_core import hs256
from orderpush_core.auth import InvalidToken, TokenVerifier, issue_token

SECRET = "hs256-differential-secret-0123456789abcdef"
AUD = "orderpush"
ISS = "https://id.example"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(header_part: str, payload_part: str, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{header_part}.{payload_part}".encode(), hashlib.sha256)
    return b64(mac.digest())


def token(header: Any, claims: Any, *, secret: str = SECRET) -> str:
    h = b64(json.dumps(header).encode()) if not isinstance(header, str) else header
    p = b64(json.dumps(claims).encode()) if not isinstance(claims, str) else claims
    return f"{h}.{p}.{sign(h, p, secret)}"


def cases() -> Iterator[tuple[str, str]]:
    now = int(time.time())
    ok: dict[str, Any] = {"sub": "alice", "exp": now + 600, "aud": AUD, "iss": ISS}
    hs = {"alg": "HS256", "typ": "JWT"}
    good = token(hs, ok)
    yield "valid", good
    yield "valid, no typ", token({"alg": "HS256"}, ok)
    yield "valid, iat and nbf in the past", token(hs, {**ok, "iat": now - 5, "nbf": now - 5})
    yield "valid, kid", token({**hs, "kid": "k1"}, ok)
    yield "valid, jti", token(hs, {**ok, "jti": "j1"})
    yield "valid, exp as float", token(hs, {**ok, "exp": now + 600.5})
    yield "valid, exp as numeric string", token(hs, {**ok, "exp": str(now + 600)})
    yield "valid, aud list", token(hs, {**ok, "aud": ["x", AUD]})
    h, p, s = good.split(".")
    yield "valid, padded segments", ".".join(x + "=" * (-len(x) % 4) for x in (h, p, s))
    for name, claims in {
        "expired": {**ok, "exp": now - 5},
        "expired within 30 s leeway": {**ok, "exp": now - 5},
        "expired past leeway": {**ok, "exp": now - 60},
        "exp missing": {k: v for k, v in ok.items() if k != "exp"},
        "exp null": {**ok, "exp": None},
        "exp not a number": {**ok, "exp": "soon"},
        "exp true": {**ok, "exp": True},
        "sub missing": {k: v for k, v in ok.items() if k != "sub"},
        "sub a number": {**ok, "sub": 7},
        "sub empty": {**ok, "sub": ""},
        "nbf in the future": {**ok, "nbf": now + 20},
        "nbf far in the future": {**ok, "nbf": now + 600},
        "nbf not a number": {**ok, "nbf": "x"},
        "iat in the future": {**ok, "iat": now + 600},
        "iat not a number": {**ok, "iat": "x"},
        "jti a number": {**ok, "jti": 5},
        "aud other": {**ok, "aud": "other"},
        "aud missing": {k: v for k, v in ok.items() if k != "aud"},
        "aud list of others": {**ok, "aud": ["x", "y"]},
        "aud a number": {**ok, "aud": 5},
        "iss other": {**ok, "iss": "https://evil.example"},
        "iss missing": {k: v for k, v in ok.items() if k != "iss"},
        "iss a number": {**ok, "iss": 5},
        "claims a list": [ok],
    }.items():
        yield name, token(hs, claims)
    for name, header in {
        "alg none": {"alg": "none"},
        "alg HS512": {"alg": "HS512"},
        "alg missing": {"typ": "JWT"},
        "alg empty": {"alg": ""},
        "alg a list": {"alg": ["HS256"]},
        "kid a number": {**hs, "kid": 5},
        "crit unsupported": {**hs, "crit": ["exp"]},
        "crit empty": {**hs, "crit": []},
        "crit b64 missing from header": {**hs, "crit": ["b64"]},
        "crit b64 true": {**hs, "b64": True, "crit": ["b64"]},
        "b64 false": {**hs, "b64": False, "crit": ["b64"]},
        "header a list": ["HS256"],
    }.items():
        yield name, token(header, ok)
    yield "bad signature", f"{h}.{p}.{s[:-2]}AA"
    yield "other secret", token(hs, ok, secret=SECRET + "x")
    yield "no signature", f"{h}.{p}."
    yield "two segments", f"{h}.{p}"
    yield "four segments", f"{good}.{s}"
    yield "one segment", h
    yield "empty", ""
    yield "junk in header", f"!{h[1:]}.{p}.{sign('!' + h[1:], p)}"
    yield "junk in signature", f"{h}.{p}.{s[:-1]}!"
    yield "three pads", f"{h}===.{p}.{s}"
    yield "pad not on a quantum", f"{h}{'=' if len(h) % 4 == 0 else ''}.{p}.{s}"
    yield "non-canonical base64", f"{h}.{p}.{s[:-1]}{chr(ord(s[-1]) ^ 1)}"
    yield "header not json", token(b64(b"{not json"), ok)
    yield "payload not json", token(hs, b64(b"[1, 2"))
    yield "non-ascii", good + "\u00e9"
    yield "whitespace", f" {good}"


CONFIGS = [
    {"audience": None, "issuer": None, "leeway_s": 0.0},
    {"audience": AUD, "issuer": ISS, "leeway_s": 30.0},
]


def outcome_pyjwt(raw: str, config: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", jwt.decode(
            raw,
            SECRET,
            algorithms=["HS256"],
            audience=config["audience"],
            issuer=config["issuer"],
            leeway=config["leeway_s"],
            options={"require": ["exp", "sub"], "verify_aud": config["audience"] is not None},
        )
    except jwt.PyJWTError:
        return "refused", None


def outcome_fast(raw: str, config: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", hs256.Hs256Verifier(SECRET, **config).decode(raw)
    except jwt.PyJWTError:
        return "refused", None


@pytest.mark.parametrize("config", CONFIGS, ids=["bare", "aud+iss+leeway"])
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_the_fast_path_accepts_and_refuses_what_pyjwt_does(config: dict[str, Any]) -> None:
    assert hs256.available()
    outcomes = [
        (name, outcome_fast(raw, config), outcome_pyjwt(raw, config)) for name, raw in cases()
    ]
    disagreements = [(name, fast, slow) for name, fast, slow in outcomes if fast != slow]
    assert disagreements == []
    # The table exercises both sides: some accepted, most refused.
    verdicts = dict((name, fast[0]) for name, fast, _ in outcomes)
    assert verdicts["valid"] == verdicts["valid, padded segments"] == "ok"
    assert list(verdicts.values()).count("refused") >= 30


def test_token_verifier_uses_the_fast_path_only_for_a_static_hs256_secret() -> None:
    verifier = TokenVerifier(SECRET)
    assert verifier._fast is not None
    assert verifier.verify(issue_token("alice", SECRET)).user_id == "alice"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        verifier.verify(issue_token("alice", SECRET + "x"))
    assert TokenVerifier(SECRET, "HS256") == verifier  # not part of equality
    # A secret PyJWT refuses as an HMAC key keeps PyJWT's path (and its refusal).
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
    refusing = TokenVerifier(pem)
    assert refusing._fast is None
    with pytest.raises(InvalidToken):
        refusing.verify(issue_token("alice", SECRET))
