"""Test-wide hooks and fixtures: tests marked `kafka` / `redis` / `browser` need real
servers; ORDERPUSH_TEST_BACKENDS deselects them (they are then not collected
at all, so nothing counts as passed that did not run)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.backends import BUS_BACKENDS, REDIS_URL, SESSION_BACKENDS, unique


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    available: set[str] = {*BUS_BACKENDS, *SESSION_BACKENDS}
    if "browser" in os.environ.get("ORDERPUSH_TEST_BACKENDS", "memory,kafka,redis,browser"):
        available.add("browser")
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        needs = {m.name for m in item.iter_markers() if m.name in ("kafka", "redis", "browser")}
        (keep if needs <= available else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix of its own for one test; its keys are deleted after."""
    name = unique("t")
    yield name
    client = Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
