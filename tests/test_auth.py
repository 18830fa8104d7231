"""Token verification: pinned algorithm, audience, issuer, leeway, and keys
from a JWKS URL (a real HTTP server on 127.0.0.1) with key rotation by `kid`;
end to end through the gateway's /ws as well."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.protocol import CloseCode
from gateway.settings import DEV_SECRET, Settings
from orderpush.apps import gateway_app
from orderpush_core.auth import InvalidToken, TokenVerifier, issue_token
from orderpush_core.jwks import JwksKeys
from tests.backends import unique
from tests.harness import serve
from tests.wsclient import connect

AUD = "shop"
ISS = "https://login.shop.example"


@dataclass
class Provider:
    """A JWKS endpoint whose key set the test can rotate; counts its fetches."""

    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    algorithm: str = "RS256"
    fetches: int = 0
    url: str = ""

    def add_key(self, kid: str) -> Any:
        if self.algorithm == "RS256":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        return key

    def document(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
            jwk = codec.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig", "alg": self.algorithm})
        return {"keys": out}

    def token(self, kid: str, user: str = "alice", ttl_s: float = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": user, "iat": now, "exp": now + int(ttl_s), "aud": AUD, "iss": ISS}
        payload.update(claims)
        return jwt.encode(payload, self.keys[kid], algorithm=self.algorithm, headers={"kid": kid})


@pytest.fixture(params=["RS256", "ES256"])
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    idp = Provider(algorithm=request.param)

    async def jwks(req: Request) -> Response:
        idp.fetches += 1
        return JSONResponse(idp.document())

    async with serve(Starlette(routes=[Route("/.well-known/jwks.json", jwks)])) as addr:
        idp.url = f"http://{addr}/.well-known/jwks.json"
        yield idp


def verifier_for(idp: Provider, min_refresh_s: float = 60.0, **kwargs: Any) -> TokenVerifier:
    keys = JwksKeys(idp.url, idp.algorithm, min_refresh_s=min_refresh_s)
    return TokenVerifier("", idp.algorithm, audience=AUD, issuer=ISS, jwks=keys, **kwargs)


async def test_jwks_keys_are_fetched_once_and_cached(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider)
    for _ in range(20):
        assert (await verifier.averify(provider.token("k1"))).user_id == "alice"
    assert provider.fetches == 1


async def test_rotated_key_is_fetched_on_unknown_kid(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider, min_refresh_s=0.2)
    assert (await verifier.averify(provider.token("k1"))).user_id == "alice"
    # The provider rotates: k2 in, k1 out.
    provider.add_key("k2")
    del provider.keys["k1"]
    await asyncio.sleep(0.3)  # past the refresh bound
    assert (await verifier.averify(provider.token("k2", user="bob"))).user_id == "bob"
    assert provider.fetches == 2
    # A token signed with the retired key no longer verifies.
    retired = Provider(algorithm=provider.algorithm)
    retired.add_key("k1")
    with pytest.raises(InvalidToken, match="kid"):
        await verifier.averify(retired.token("k1"))


async def test_unknown_kids_cannot_flood_the_provider(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider, min_refresh_s=60)
    await verifier.averify(provider.token("k1"))
    forged = Provider(algorithm=provider.algorithm)
    for n in range(50):
        forged.add_key(f"made-up-{n}")
        with pytest.raises(InvalidToken, match="no signing key"):
            await verifier.averify(forged.token(f"made-up-{n}"))
    # One fetch at start; the first unknown kid may not refetch within 60 s either.
    assert provider.fetches == 1


async def test_a_key_of_another_provider_with_a_known_kid_is_refused(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider)
    impostor = Provider(algorithm=provider.algorithm)
    impostor.add_key("k1")
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        await verifier.averify(impostor.token("k1"))


async def test_wrong_audience_issuer_and_missing_kid_are_refused(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider)
    with pytest.raises(InvalidToken, match="udience"):
        await verifier.averify(provider.token("k1", aud="another-shop"))
    with pytest.raises(InvalidToken, match="ssuer"):
        await verifier.averify(provider.token("k1", iss="https://evil.example"))
    no_kid = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) + 60, "aud": AUD, "iss": ISS},
        provider.keys["k1"],
        algorithm=provider.algorithm,
    )
    with pytest.raises(InvalidToken, match="kid"):
        await verifier.averify(no_kid)


async def test_an_unreachable_jwks_keeps_the_known_keys(provider: Provider) -> None:
    provider.add_key("k1")
    keys = JwksKeys(provider.url, provider.algorithm, cache_s=0.01, min_refresh_s=0.01)
    verifier = TokenVerifier("", provider.algorithm, audience=AUD, issuer=ISS, jwks=keys)
    await verifier.averify(provider.token("k1"))
    keys.url = "http://127.0.0.1:9/nothing-listens-here"
    await asyncio.sleep(0.05)
    assert (await verifier.averify(provider.token("k1"))).user_id == "alice"
    assert keys.fetches >= 2  # it did try again, and kept k1


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none_is_refused() -> None:
    token = _unsigned({"sub": "alice", "exp": int(time.time()) + 60})
    with pytest.raises(InvalidToken):
        TokenVerifier(DEV_SECRET).verify(token)


async def test_alg_none_is_refused_with_a_jwks(provider: Provider) -> None:
    provider.add_key("k1")
    verifier = verifier_for(provider)
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "aud": AUD, "iss": ISS}
    header = {"alg": "none", "typ": "JWT", "kid": "k1"}
    raw = [
        base64.urlsafe_b64encode(json.dumps(x).encode()).rstrip(b"=").decode()
        for x in (header, claims)
    ]
    with pytest.raises(InvalidToken):
        await verifier.averify(f"{raw[0]}.{raw[1]}.")


def test_hs512_token_is_refused_by_an_hs256_configuration() -> None:
    token = issue_token("alice", DEV_SECRET + DEV_SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken, match="alg value is not allowed"):
        TokenVerifier(DEV_SECRET, "HS256").verify(token)
    assert TokenVerifier(DEV_SECRET, "HS256").verify(issue_token("alice", DEV_SECRET))


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The classic confusion: the RS256 public key used as an HMAC secret."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives import serialization

    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = TokenVerifier(pem, "RS256")
    good = issue_token("alice", key, algorithm="RS256")
    assert verifier.verify(good).user_id == "alice"
    with pytest.raises(InvalidToken):
        forged = _unsigned({"sub": "mallory", "exp": int(time.time()) + 60}, alg="HS256")
        verifier.verify(forged + "c2lnbmF0dXJl")


def test_wrong_audience_and_issuer_are_refused_with_a_secret() -> None:
    verifier = TokenVerifier(DEV_SECRET, audience=AUD, issuer=ISS)
    ok = issue_token("alice", DEV_SECRET, audience=AUD, issuer=ISS)
    assert verifier.verify(ok).user_id == "alice"
    for token, what in (
        (issue_token("alice", DEV_SECRET, audience="other", issuer=ISS), "udience"),
        (issue_token("alice", DEV_SECRET, audience=AUD, issuer="https://evil.example"), "ssuer"),
        (issue_token("alice", DEV_SECRET, issuer=ISS), "aud"),
        (issue_token("alice", DEV_SECRET, audience=AUD), "iss"),
    ):
        with pytest.raises(InvalidToken, match=what):
            verifier.verify(token)


def test_leeway_accepts_a_just_expired_token_and_no_more() -> None:
    expired_5s = issue_token("alice", DEV_SECRET, ttl_s=-5)
    with pytest.raises(InvalidToken, match="expired"):
        TokenVerifier(DEV_SECRET).verify(expired_5s)
    lenient = TokenVerifier(DEV_SECRET, leeway_s=30)
    claims = lenient.verify(expired_5s)
    assert lenient.closes_at(claims) == claims.expires_at + 30
    with pytest.raises(InvalidToken, match="expired"):
        lenient.verify(issue_token("alice", DEV_SECRET, ttl_s=-60))


async def test_gateway_with_a_jwks_accepts_rotated_keys_and_refuses_the_rest(
    provider: Provider,
) -> None:
    provider.add_key("k1")
    settings = Settings(
        sessions_url=f"memory://{unique('jwks')}",
        jwt_algorithm=provider.algorithm,
        jwt_jwks_url=provider.url,
        jwt_jwks_min_refresh_s=0.2,
        jwt_audience=AUD,
        jwt_issuer=ISS,
    )
    async with serve(gateway_app(settings)) as addr:
        async with connect(addr, provider.token("k1")) as alice:
            await alice.recv_type("snapshot")
            provider.add_key("k2")
            await asyncio.sleep(0.3)
            # Re-auth on the open socket with a token of the new key.
            await alice.send({"type": "auth", "token": provider.token("k2")})
            await alice.send({"type": "ping"})
            await alice.recv_type("pong")
        for bad in (
            provider.token("k2", aud="other"),
            provider.token("k2", iss="https://evil.example"),
            provider.token("k2", ttl_s=-10),
            _unsigned({"sub": "alice", "exp": int(time.time()) + 60, "aud": AUD, "iss": ISS}),
            issue_token("alice", DEV_SECRET, audience=AUD, issuer=ISS, kid="k2"),
        ):
            async with connect(addr, bad, handshake=False) as refused:
                assert await refused.closed_with() == CloseCode.TOKEN_INVALID
        # Others are still served.
        async with connect(addr, provider.token("k2", user="bob")) as bob:
            await bob.recv_type("snapshot")
