"""JWT verification and issuing (PROTOCOL.md section 2, "Tokens").

The accepted algorithms come from configuration only, never from the token's
header, so a token cannot talk the verifier into `none` or into HS256 with a
public key as the secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired, or lacks a claim."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenVerifier:
    """Checks tokens. `key` is the HS256 secret, or the public key (PEM) for RS256/ES256."""

    key: str
    algorithm: str = "HS256"
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0

    def verify(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self.key,
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


def issue_token(
    user_id: str,
    secret: str,
    *,
    ttl_s: float = 3600.0,
    algorithm: str = "HS256",
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A signed token for `user_id` (dev mode, the `token` command, tests)."""
    now = int(time.time())
    payload: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + int(ttl_s)}
    if audience is not None:
        payload["aud"] = audience
    if issuer is not None:
        payload["iss"] = issuer
    return jwt.encode(payload, secret, algorithm=algorithm)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
