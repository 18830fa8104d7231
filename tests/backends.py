"""Which real servers the contract tests run against.

The real backends are on by default: `make test` starts Kafka and Redis first.
`ORDERPUSH_TEST_BACKENDS=memory` deselects the real-server cases for a quick
local run (they are not collected, so nothing is reported as skipped-passing).
"""

from __future__ import annotations

import os
import uuid

KAFKA_BOOTSTRAP = os.environ.get("ORDERPUSH_TEST_KAFKA", "127.0.0.1:9092")
REDIS_URL = os.environ.get("ORDERPUSH_TEST_REDIS", "redis://127.0.0.1:6379/15")
_selected = os.environ.get("ORDERPUSH_TEST_BACKENDS", "memory,kafka,redis,browser").split(",")

BUS_BACKENDS = [b for b in ("memory", "kafka") if b in _selected]
SESSION_BACKENDS = [b for b in ("memory", "redis") if b in _selected]


def unique(prefix: str) -> str:
    """A name no other test run uses, so tests on shared servers stay isolated."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def bus_url(backend: str) -> str:
    return "memory://" if backend == "memory" else f"kafka://{KAFKA_BOOTSTRAP}"


def sessions_url(backend: str, name: str) -> str:
    return f"memory://{name}" if backend == "memory" else REDIS_URL
