"""Every Kafka codec is consumed, and a batch that cannot be decoded is set
aside instead of stalling its partition (issue 7), against the real broker.

The batches come from kcat (librdkafka), as from an outside producer: several
producer libraries compress with snappy, lz4 or zstd by default. librdkafka
sends a batch uncompressed when compressing does not make it smaller, so the
values here are large and repetitive, and each test checks the codec the
consumer actually saw (`BATCHES_BY_CODEC`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from orderpush_core.auth import issue_token
from orderpush_core.bus import Record
from orderpush_core.bus.kafka import KafkaEventBus
from orderpush_core.bus.kafka_batches import BATCHES_BY_CODEC
from orderpush_core.events import DEAD_LETTER_TOPIC, encode_event, make_event
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.harness import ROOT, cluster
from tests.wsclient import connect

pytestmark = pytest.mark.kafka

CODECS = ("gzip", "snappy", "lz4", "zstd")
SECRET = "codec-test-secret-0123456789abcdef0123"
PADDING = "compress me " * 200  # ~2.4 KB, so every codec makes the batch smaller


def kcat(*args: str, data: bytes | None = None) -> bytes:
    path = shutil.which("kcat")
    assert path is not None, "kcat is installed by `make tools` (Debian package kcat)"
    done = subprocess.run(
        [path, "-b", KAFKA_BOOTSTRAP, *args], input=data, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def produce(topic: str, lines: list[str], codec: str) -> None:
    """One kcat run: the lines (KEY<TAB>VALUE) go out as one batch per partition."""
    payload = "".join(line + "\n" for line in lines).encode()
    kcat("-t", topic, "-K", "\t", "-P", "-z", codec, "-X", "linger.ms=100", data=payload)


async def collect(consumer: Any, count: int, timeout_s: float = 30.0) -> list[Record]:
    got: list[Record] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            got.extend(await consumer.getmany(timeout_ms=200))
    return got


@pytest.mark.parametrize("codec", CODECS)
async def test_batches_of_every_codec_are_consumed(codec: str) -> None:
    bus = KafkaEventBus(KAFKA_BOOTSTRAP, topic_prefix=unique("c"))
    await bus.start()
    try:
        consumer = await bus.consumer(["orders"], unique("g"))
        seen_before = BATCHES_BY_CODEC[codec]
        values = [f"{codec}-{n}-{PADDING}" for n in range(5)]
        produce(bus.wire_name("orders"), [f"ord-1\t{v}" for v in values], codec)
        got = await collect(consumer, 5)
        assert [r.value.decode() for r in got] == values
        assert not any(r.undecodable for r in got)
        assert BATCHES_BY_CODEC[codec] > seen_before, f"no {codec} batch reached the consumer"
        assert await consumer.getmany(timeout_ms=300) == []
        await consumer.stop()
    finally:
        await bus.stop()


def _hide_codec_libraries(directory: Path) -> str:
    """A PYTHONPATH on which `import cramjam` fails, as on a machine where
    aiokafka was installed without its codec extras: snappy, lz4 and zstd
    batches cannot be decoded there at all."""
    (directory / "cramjam.py").write_text(
        'raise ImportError("cramjam hidden by the test: no codec libraries")\n'
    )
    parts = [str(directory), os.environ.get("PYTHONPATH", ""), str(ROOT)]
    return os.pathsep.join(p for p in parts if p)


@pytest.mark.redis
async def test_an_undecodable_batch_is_set_aside_and_the_partition_goes_on(
    tmp_path: Path,
) -> None:
    prefix = unique("cz")
    user = f"codec-{prefix}"
    order_id = f"ord-{prefix}"
    env = {
        "ORDERPUSH_JWT_SECRET": SECRET,
        "ORDERPUSH_TOPIC_PREFIX": prefix,
        "ORDERPUSH_SESSION_KEY_PREFIX": prefix,
        "ORDERPUSH_BUS": f"kafka://{KAFKA_BOOTSTRAP}",
        "ORDERPUSH_SESSIONS": REDIS_URL,
        "PYTHONPATH": _hide_codec_libraries(tmp_path),
    }
    # The same order id keys every record to one partition: the plain event
    # sits right behind the snappy batch that this gateway cannot decode.
    hidden = [
        make_event(
            "order.pending",
            order_id=order_id,
            user_id=user,
            status="pending",
            version=1,
            data={"note": PADDING},
        )
        for _ in range(3)
    ]
    plain = make_event(
        "order.confirmed", order_id=order_id, user_id=user, status="confirmed", version=2
    )
    with cluster() as running:
        gateway = running.start("gw", ["gateway", "--instance-id", "gw-codec"], env, tmp_path)
        running.wait_healthy(gateway, "/readyz")
        async with connect(gateway.addr, issue_token(user, SECRET)) as client:
            await client.recv_type("snapshot")
            lines = [f"{order_id}\t{encode_event(e).decode()}" for e in hidden]
            produce(f"{prefix}orders", lines, "snappy")
            produce(f"{prefix}orders", [f"{order_id}\t{encode_event(plain).decode()}"], "none")

            (received,) = await client.events(1, timeout_s=30)
            assert received["event"]["event_id"] == plain.event_id
            assert await client.silent(0.5)

        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            metrics = (await http.get(gateway.admin + "/metrics")).text
        assert "orderpush_undecodable_batches_total 1.0" in metrics, metrics
        assert "orderpush_poison_records_total 0.0" in metrics
        log = gateway.log()
    assert "undecodable snappy batch" in log

    # The dead letter names the offsets, so the batch can be re-read by a tool
    # that decodes snappy; kcat reads it back here.
    out = kcat("-C", "-t", prefix + DEAD_LETTER_TOPIC, "-c", "1", "-e", "-J", "-o", "beginning")
    letter = json.loads(out.decode().splitlines()[0])
    headers = dict(zip(letter["headers"][::2], letter["headers"][1::2], strict=True))
    reason = headers["x-orderpush-reason"]
    assert "undecodable snappy batch, offsets 0-2" in reason, reason
    topic, partition, offset = headers["x-orderpush-source"].split("/")
    assert (topic, offset) == ("orders", "2")
    original = kcat(
        *("-C", "-t", prefix + "orders", "-p", partition, "-o", "0", "-c", "3", "-e"),
        *("-f", "%s\n"),
    )
    assert original.decode().count('"order.pending"') == 3
