"""JWT verification and issuing (docs/protocol.md section 2, "Tokens").

The accepted algorithm comes from configuration only, never from the token's
header, so a token cannot talk the verifier into `none`, into HS512 with the
HS256 secret, or into HS256 with a public key as the secret.

Keys: the HS256 secret, one static public key (PEM), or the public keys of an
identity provider's JWKS URL (`jwks.py`), picked by the token's `kid`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from orderpush_core import hs256
from orderpush_core.jwks import JwksKeys


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired, or lacks a claim."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Checks tokens. `key` is the HS256 secret, or the public key (PEM) for
    RS256/ES256; with `jwks`, the key is looked up by `kid` instead."""

    key: str
    algorithm: str = "HS256"
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0
    jwks: JwksKeys | None = None
    #: HS256 with a static secret: PyJWT's rules without its per-call costs
    #: (`hs256.py`); None: every token goes through `jwt.decode`.
    _fast: hs256.Hs256Verifier | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.algorithm == hs256.ALGORITHM and self.jwks is None and hs256.available():
            try:
                fast = hs256.Hs256Verifier(
                    self.key, audience=self.audience, issuer=self.issuer, leeway_s=self.leeway_s
                )
            except jwt.PyJWTError:
                return  # a secret PyJWT refuses: jwt.decode refuses every token with it
            object.__setattr__(self, "_fast", fast)

    def verify(self, token: str) -> Claims:
        """Verify with what is at hand (a JWKS is not fetched: see `averify`)."""
        return self._decode(token, self._key_for(token))

    async def averify(self, token: str) -> Claims:
        """Verify; with a JWKS, an unknown `kid` first refreshes the key set
        (at most once per `ORDERPUSH_JWT_JWKS_MIN_REFRESH_S`)."""
        if self.jwks is None:
            return self.verify(token)
        kid = _kid(token)
        key = await self.jwks.key(kid)
        if key is None:
            raise InvalidToken(f"no signing key with kid {kid[:40]!r}")
        return self._decode(token, key)

    def closes_at(self, claims: Claims) -> float:
        """When a socket authenticated by `claims` must be closed (exp + leeway)."""
        return claims.expires_at + self.leeway_s

    def _key_for(self, token: str) -> Any:
        if self.jwks is None:
            return self.key
        kid = _kid(token)
        key = self.jwks.cached(kid)
        if key is None:
            raise InvalidToken(f"no signing key with kid {kid[:40]!r}")
        return key

    def _decode(self, token: str, key: Any) -> Claims:
        try:
            if self._fast is not None:
                claims = self._fast.decode(token)
            else:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[self.algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("`sub` must be a non-empty string")
        return Claims(user_id=sub, expires_at=float(claims["exp"]))


def _kid(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("the token has no `kid` header (required with a JWKS)")
    return kid


def issue_token(
    user_id: str,
    secret: Any,
    *,
    ttl_s: float = 3600.0,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
    kid: str | None = None,
) -> str:
    """A signed token for `user_id` (dev mode, the `token` command, tests).
    `secret` is the HS256 secret or, for RS256/ES256, a private key."""
    now = int(time.time())
    payload: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
