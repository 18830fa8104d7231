"""HS256 tokens checked with PyJWT's rules at a fraction of its cost.

Verifying one HS256 token with `jwt.decode` (PyJWT 2.15) costs ~165 us,
most of it outside the HMAC: the secret is checked again on every call
(PEM, SSH, DER, JWK lookalikes), and each base64url segment is scanned one
character at a time in Python. With 5,000 sockets connecting that was ~6%
of the gateway's connect CPU (bench/README.md, "Connecting").

`Hs256Verifier` checks the secret once, scans the segments with one regular
expression, and otherwise defers to PyJWT itself: its header rules
(`kid`, `crit`) and its claim rules (`exp`, `nbf`, `iat`, `aud`, `iss`,
`sub`, `jti`, required claims, leeway) are PyJWT's own methods, so both
paths accept and refuse the same tokens (`tests/test_hs256.py` checks them
against each other on valid and broken tokens). It raises PyJWT's
exceptions. The accepted algorithm is HS256 only, from configuration: a
token's `alg` never chooses it.

PyJWT's claim and header checks are private methods. `available()` says
whether this PyJWT has them; without them `TokenVerifier` keeps calling
`jwt.decode`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any, Final

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import DecodeError, InvalidAlgorithmError, InvalidSignatureError

ALGORITHM: Final = "HS256"
_BASE64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")


def available() -> bool:
    return all(
        callable(getattr(cls, name, None))
        for cls, name in (
            (jwt.PyJWT, "_merge_options"),
            (jwt.PyJWT, "_validate_claims"),
            (jwt.PyJWS, "_validate_headers"),
        )
    )


def _segment(segment: bytes, name: str) -> bytes:
    """PyJWT's strict base64url rule: at most two '=' and only on a whole
    quantum, nothing outside the alphabet, and the canonical encoding."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4 != 0)
        or len(stripped) % 4 == 1
        or _BASE64URL.fullmatch(stripped) is None
    ):
        raise DecodeError(f"Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (TypeError, binascii.Error) as exc:
        raise DecodeError(f"Invalid {name} padding") from exc
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise DecodeError(f"Invalid {name} padding")
    return decoded


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"Invalid {what} string: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"Invalid {what} string: must be a json object")
    return value


class Hs256Verifier:
    def __init__(
        self,
        secret: str,
        *,
        audience: str | None,
        issuer: str | None,
        leeway_s: float,
        require: tuple[str, ...] = ("exp", "sub"),
    ) -> None:
        # PyJWT checks the secret on every call (and refuses it every time
        # if it looks like an asymmetric key); once is enough.
        self._key = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._jwt = jwt.PyJWT()
        self._jws = jwt.PyJWS(algorithms=[ALGORITHM])
        self._options = self._jwt._merge_options(
            {"require": list(require), "verify_aud": audience is not None}
        )

    def decode(self, token: str) -> dict[str, Any]:
        """The token's claims, checked as `jwt.decode(token, secret,
        algorithms=["HS256"], audience=..., issuer=..., leeway=...,
        options={"require": [...], "verify_aud": audience is not None})` does."""
        raw = token.encode("utf-8")
        try:
            signing_input, crypto_segment = raw.rsplit(b".", 1)
            header_segment, payload_segment = signing_input.split(b".", 1)
        except ValueError:
            raise DecodeError("Not enough segments") from None
        header = _json_object(_segment(header_segment, "header"), "header")
        if header.get("b64", True) is False:
            # RFC 7797 unencoded payloads need a detached payload: never here.
            raise DecodeError("a token with an unencoded (b64: false) payload is not accepted")
        payload_raw = _segment(payload_segment, "payload")
        signature = _segment(crypto_segment, "crypto")
        self._jws._validate_headers(header)
        if "alg" not in header:
            raise InvalidAlgorithmError("Algorithm not specified")
        alg = header["alg"]
        if not alg or alg != ALGORITHM:
            raise InvalidAlgorithmError("The specified alg value is not allowed")
        expected = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise InvalidSignatureError("Signature verification failed")
        payload = _json_object(payload_raw, "payload")
        self._jwt._validate_claims(
            payload,
            self._options,
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway_s,
        )
        return payload
