#!/usr/bin/env python3
"""Wait until a Kafka broker answers, then make sure the project's topics exist.

Used by scripts/services.sh; needs aiokafka (exit code 3 when it is missing).

    kafka_ready.py --bootstrap 127.0.0.1:9092 --timeout 90 \
        --topics payments,orders --partitions 4 --warm
    kafka_ready.py --bootstrap 127.0.0.1:9092 --check      # one quick probe

Exit codes: 0 ready, 1 not ready before the deadline (the last error is
printed), 2 bad usage, 3 aiokafka is not importable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

try:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code
except ImportError as exc:  # pragma: no cover - reported to the shell script
    print(f"kafka_ready: aiokafka is not importable ({exc})", file=sys.stderr)
    sys.exit(3)

TOPIC_ALREADY_EXISTS = 36
# FindCoordinator answers these while __consumer_offsets / __transaction_state
# are still being created and loaded.
COORDINATOR_RETRIABLE = {14, 15, 16}  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR


class NotReady(Exception):
    pass


def _say(msg: str) -> None:
    print(f"kafka_ready: {msg}", flush=True)


async def _admin(bootstrap: str, request_timeout_ms: int) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="orderpush-services",
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=200,
    )
    try:
        await admin.start()
        await admin.describe_cluster()
    except BaseException:
        await admin.close()
        raise
    return admin


async def _connect(bootstrap: str, deadline: float) -> AIOKafkaAdminClient:
    last: BaseException | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(f"broker at {bootstrap} did not answer: {last!r}")
        try:
            return await asyncio.wait_for(_admin(bootstrap, 5000), timeout=min(left, 10))
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.5)


def _topic_errors(response) -> list[tuple[str, int, str]]:
    out = []
    for entry in getattr(response, "topic_errors", []) or []:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else ""
        out.append((name, code, message or ""))
    return out


async def _ensure_topics(admin, topics: list[str], partitions: int, deadline: float) -> None:
    existing = set(await admin.list_topics())
    missing = [t for t in topics if t not in existing]
    if missing:
        response = await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing],
            timeout_ms=15000,
        )
        for name, code, message in _topic_errors(response):
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise NotReady(
                    f"creating topic {name!r} failed: {for_code(code).__name__} {message}"
                )
        _say(f"created topics: {', '.join(missing)}")
    # Wait until every topic has a leader on each of its partitions.
    while True:
        pending = []
        for desc in await admin.describe_topics(topics):
            name, code = desc["topic"], desc["error_code"]
            parts = desc.get("partitions") or []
            if code != 0 or not parts or any(p["leader"] < 0 for p in parts):
                pending.append(name)
            elif len(parts) < partitions:
                _say(
                    f"warning: topic {name!r} exists with {len(parts)} partitions (< {partitions})"
                )
        if not pending:
            return
        if time.monotonic() > deadline:
            raise NotReady(f"topics without leaders: {', '.join(pending)}")
        await asyncio.sleep(0.2)


async def _warm_coordinator(admin, key: str, kind: int, deadline: float) -> None:
    """Ask for a group (kind 0) / transaction (kind 1) coordinator until the
    broker has created and loaded its internal topic, so that the first
    consumer group or transactional producer of a test does not pay for it."""
    while True:
        try:
            await admin.find_coordinator(key, kind)
            return
        except Exception as exc:
            code = getattr(exc, "errno", None)
            if code not in COORDINATOR_RETRIABLE or time.monotonic() > deadline:
                raise NotReady(f"coordinator (type {kind}) not available: {exc!r}") from exc
            await asyncio.sleep(0.2)


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--topics", default="", help="comma-separated topics to create")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument(
        "--warm", action="store_true", help="also wait for group and transaction coordinators"
    )
    ap.add_argument("--check", action="store_true", help="one quick probe (status)")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.CRITICAL)  # aiokafka logs every refused connection
    if args.check:
        args.timeout = min(args.timeout, 5.0)
    deadline = time.monotonic() + args.timeout
    try:
        admin = await _connect(args.bootstrap, deadline)
    except NotReady as exc:
        print(f"kafka_ready: {exc}", file=sys.stderr)
        return 1
    try:
        if args.check:
            cluster = await admin.describe_cluster()
            _say(f"cluster {cluster.get('cluster_id')} answers on {args.bootstrap}")
            return 0
        topics = [t.strip() for t in args.topics.split(",") if t.strip()]
        if topics:
            await _ensure_topics(admin, topics, args.partitions, deadline)
        if args.warm:
            await _warm_coordinator(admin, "orderpush-warmup", 0, deadline)
            await _warm_coordinator(admin, "orderpush-warmup", 1, deadline)
        return 0
    except NotReady as exc:
        print(f"kafka_ready: {exc}", file=sys.stderr)
        return 1
    finally:
        await admin.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
