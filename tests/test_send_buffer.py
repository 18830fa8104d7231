"""SendBuffer: the per-connection FIFO the sender task awaits (gateway/send_buffer.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.send_buffer import SendBuffer


def test_fifo_order_and_size() -> None:
    buf: SendBuffer[int] = SendBuffer()
    assert buf.empty() and buf.qsize() == 0
    for i in range(5):
        buf.put_nowait(i)
    assert buf.qsize() == 5 and not buf.empty()
    assert [buf.get_nowait() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert buf.empty()
    with pytest.raises(asyncio.QueueEmpty):
        buf.get_nowait()


async def test_get_waits_for_a_put_and_keeps_order() -> None:
    buf: SendBuffer[str] = SendBuffer()
    got: list[str] = []

    async def consume() -> None:
        for _ in range(3):
            got.append(await buf.get())

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert got == []
    buf.put_nowait("a")
    buf.put_nowait("b")
    await asyncio.sleep(0)
    buf.put_nowait("c")
    async with asyncio.timeout(2):
        await task
    assert got == ["a", "b", "c"]


async def test_cancelled_get_leaves_the_buffer_usable() -> None:
    buf: SendBuffer[int] = SendBuffer()
    task = asyncio.create_task(buf.get())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    buf.put_nowait(7)
    async with asyncio.timeout(2):
        assert await buf.get() == 7


async def test_a_second_concurrent_consumer_is_refused() -> None:
    buf: SendBuffer[int] = SendBuffer()
    first = asyncio.create_task(buf.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await buf.get()
    buf.put_nowait(1)
    async with asyncio.timeout(2):
        assert await first == 1
