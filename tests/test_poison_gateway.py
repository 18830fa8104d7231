"""A record the session store keeps refusing never stalls its partition.

Real Kafka and real Redis: one user's keys in Redis are replaced by plain
strings (what a stray script or a key clash would leave), so every append
for that user fails with WRONGTYPE, a reply that says nothing about Redis
being away. The pump retries it a bounded number of times, then sets the
record aside on the dead-letter topic and counts it; the events behind it
on the same partition reach their user. Outages (Redis unreachable or
frozen) are still retried until they end: tests/test_faults_redis.py.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.app import Gateway
from gateway.metrics import current
from gateway.settings import Settings
from orderpush.apps import gateway_app
from orderpush_core.bus import OutgoingRecord
from orderpush_core.events import DEAD_LETTER_TOPIC, encode_event, make_event
from orderpush_core.failures import is_outage
from tests.backends import KAFKA_BOOTSTRAP, REDIS_URL, unique
from tests.faults import SECRET, poll_until, token
from tests.harness import serve
from tests.stubs_support import read_topic
from tests.wsclient import connect

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def order(user: str, n: int) -> bytes:
    event = make_event(
        "order.pending", order_id=f"ord-{user}-{n}", user_id=user, status="pending", version=1
    )
    return encode_event(event)


async def test_a_record_that_keeps_failing_is_set_aside_and_the_partition_goes_on() -> None:
    prefix = unique("pz")
    settings = Settings(
        bus_url=f"kafka://{KAFKA_BOOTSTRAP}",
        sessions_url=REDIS_URL,
        topic_prefix=prefix,
        session_key_prefix=prefix,
        instance_id=f"{prefix}-gw",
        jwt_secret=SECRET,
        admin_port=None,
    )
    app = gateway_app(settings)
    gateway: Gateway = app.state.gateway
    redis = Redis.from_url(REDIS_URL)
    good, bad = f"good-{prefix}", f"bad-{prefix}"
    # One key for every record: one partition, in this order.
    key = "one-partition"
    try:
        async with serve(app) as addr, connect(addr, token(good)) as client:
            await client.recv_type("snapshot")
            await gateway.bus.publish([OutgoingRecord("orders", key, order(bad, 0))])

            async def handed_on() -> bool:  # every write of its append done
                return current(gateway.metrics.events_consumed) >= 1

            await poll_until("the first event handed on", handed_on, 30)
            keys = await _keys_of(redis, prefix, bad)
            assert keys
            for name in keys:  # every structure becomes a plain string
                await redis.delete(name)
                await redis.set(name, "not what the store expects")

            poison = order(bad, 1)
            records = [OutgoingRecord("orders", key, poison)]
            records += [OutgoingRecord("orders", key, order(good, n)) for n in range(5)]
            await gateway.bus.publish(records)

            received = await client.events(5, timeout_s=30)
            assert [m["event"]["order_id"] for m in received] == [
                f"ord-{good}-{n}" for n in range(5)
            ]

            async def set_aside() -> bool:
                return gateway.pump.set_aside == 1

            await poll_until(f"set aside (retries {gateway.pump.retries})", set_aside, 15)
            assert current(gateway.metrics.poison_records) == 1

            letters = await read_topic(gateway.bus, DEAD_LETTER_TOPIC, lambda got: len(got) >= 1)
            (letter,) = letters
            assert letter.value == poison
            headers = dict(letter.headers)
            assert b"WRONGTYPE" in headers["x-orderpush-reason"], headers
            assert headers["x-orderpush-source"].startswith(b"orders/")
            await poll_until("committed", lambda: _zero(gateway), 15)
    finally:
        leftovers = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()


async def _keys_of(redis: Redis, prefix: str, user: str) -> list[bytes]:
    return [k async for k in redis.scan_iter(match=f"{prefix}:*{user}*") if not k.endswith(b":s")]


async def _zero(gateway: Gateway) -> bool:
    return await gateway.pump.lag() == 0


def test_outages_and_record_errors_are_told_apart() -> None:
    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeout

    from orderpush_core.bus import BusError

    def bus_error(cause: BaseException) -> BusError:
        try:
            raise BusError("kafka: publishing failed") from cause
        except BusError as exc:
            return exc

    assert is_outage(RedisConnectionError("refused"))
    assert is_outage(RedisTimeout("timed out"))
    assert is_outage(ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert is_outage(ResponseError("LOADING Redis is loading the dataset in memory"))
    assert not is_outage(ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))
    assert not is_outage(ValueError("a bug, or a record nobody expected"))
    assert is_outage(bus_error(KafkaConnectionError()))
    assert not is_outage(bus_error(MessageSizeTooLargeError()))
    assert is_outage(BusError("the bus did not acknowledge within 1.5s"))
    assert is_outage(TimeoutError())
