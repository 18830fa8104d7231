"""Limits of one gateway instance on what a client may cost it.

Each limit is a setting, each breach is answered with a documented close
code (docs/protocol.md, "Limits") and counted in
`orderpush_limited_total{limit=...}`. The cluster-wide one, sockets per user,
lives in `gateway/presence/`; the others are local by nature:

- handshakes per client address per second (a token bucket per address),
- sockets still waiting to authenticate, per instance,
- resumes (replays) per connection (a token bucket per connection).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

#: The label values of `orderpush_limited_total`.
HANDSHAKE_RATE: Final = "handshake_rate"
UNAUTHENTICATED: Final = "unauthenticated"
USER_SOCKETS: Final = "user_sockets"
RESUME_RATE: Final = "resume_rate"
MESSAGE_RATE: Final = "message_rate"
PROXY_BODY: Final = "proxy_body"
ORDER_RATE: Final = "order_rate"


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def retry_after_s(self) -> float:
        """How long until the next token (0 when one is there)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s


class KeyedBuckets:
    """A token bucket per key (client address, user), in bounded memory: past
    `max_keys` the least recently used key is forgotten, which only ever
    forgives (a forgotten key starts again with a full bucket)."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst)
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket  # most recently used last
        return bucket

    def take(self, key: str) -> bool:
        return self.bucket(key).take()

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class Admission:
    """What a new socket must pass before it may even try to authenticate."""

    handshakes: KeyedBuckets
    max_unauthenticated: int
    exempt: frozenset[str]
    unauthenticated: int = 0

    def refuse(self, address: str | None) -> str | None:
        """The limit a new socket from `address` breaks, or None."""
        if address not in self.exempt and not self.handshakes.take(address or "?"):
            return HANDSHAKE_RATE
        if self.unauthenticated >= self.max_unauthenticated:
            return UNAUTHENTICATED
        return None
