"""The public keys of an identity provider, from its JWKS URL.

Keys are cached by `kid`. The set is fetched again when a token names a
`kid` not in the cache (the provider rotated its keys) or when the cache is
older than `cache_s`, but never more often than once per `min_refresh_s`:
tokens with made-up `kid`s cannot turn the gateway into a flood of requests
to the provider. A failed fetch keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import httpx
import jwt

log = logging.getLogger("orderpush.jwks")


class JwksKeys:
    def __init__(
        self,
        url: str,
        algorithm: str,
        *,
        cache_s: float = 300.0,
        min_refresh_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.algorithm = algorithm
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._keys: dict[str, Any] = {}
        self._fetched_at = -math.inf  # monotonic time of the last attempt
        self._loaded_at = -math.inf  # ... and of the last success
        self._lock: asyncio.Lock | None = None
        #: Fetch attempts so far (tests and operators can see the bound hold).
        self.fetches = 0

    def cached(self, kid: str) -> Any | None:
        """The key for `kid` if it is known, without fetching."""
        return self._keys.get(kid)

    async def key(self, kid: str) -> Any | None:
        """The key for `kid`, fetching the set first when it is unknown or stale
        (within the refresh bound); None when the provider does not have it."""
        if kid in self._keys and not self._stale():
            return self._keys[kid]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one fetch at a time; the others reuse it
            if (kid not in self._keys or self._stale()) and self._may_fetch():
                await self._fetch()
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.cache_s

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._fetched_at >= self.min_refresh_s

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "fetching the JWKS %s failed: %s; keeping %d keys", self.url, exc, len(self._keys)
            )
            return
        keys = self._usable(document)
        if not keys:
            log.warning("the JWKS %s has no %s signing key with a kid", self.url, self.algorithm)
            return
        self._keys = keys
        self._loaded_at = self._fetched_at

    def _usable(self, document: object) -> dict[str, Any]:
        """Signing keys of the configured algorithm, by kid; others are left out
        (an `oct` key would otherwise let HMAC in through the back door)."""
        entries = document.get("keys") if isinstance(document, dict) else None
        keys: dict[str, Any] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue
            if jwk.algorithm_name == self.algorithm:
                keys[entry["kid"]] = jwk.key
        return keys
