"""`Batcher`: calls made together go out as one batch, in order, with each
caller getting its own result (or the batch's error)."""

from __future__ import annotations

import asyncio

import pytest

from orderpush_core.batching import Batcher


class Recorder:
    """A `run` that records its batches; `gate` holds a batch in flight."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]


async def test_calls_made_together_go_out_as_one_batch_in_order() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(7))), 5)
    assert results == [n * 10 for n in range(7)]
    assert recorder.batches == [list(range(7))]
    assert (batcher.batches, batcher.calls) == (1, 7)


async def test_calls_arriving_while_a_batch_is_in_flight_form_the_next_one() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = Batcher(recorder.run)
    first = asyncio.ensure_future(batcher.submit(1))
    while not recorder.batches:  # the first batch is in flight
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert recorder.batches == [[1]]  # one batch in flight at a time
    recorder.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, *later), 5)) == [10, 20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_a_batch_is_at_most_max_batch_calls() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_batch=3)
    await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(7))), 5)
    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_runs() -> None:
    recorder = Recorder()
    recorder.fail = ConnectionError("redis away")
    batcher = Batcher(recorder.run)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(n) for n in range(3)), return_exceptions=True), 5
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    recorder.fail = None
    assert await asyncio.wait_for(batcher.submit(5), 5) == 50


async def test_a_caller_that_gave_up_before_its_batch_left_is_not_sent() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = Batcher(recorder.run)
    first = asyncio.ensure_future(batcher.submit(1))
    while not recorder.batches:
        await asyncio.sleep(0)
    gone = asyncio.ensure_future(batcher.submit(2))
    kept = asyncio.ensure_future(batcher.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert list(await asyncio.wait_for(asyncio.gather(first, kept), 5)) == [10, 30]
    assert recorder.batches == [[1], [3]]


async def test_a_result_count_that_does_not_match_fails_the_batch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(short)
    with pytest.raises(RuntimeError, match="2 results for 3 calls"):
        await asyncio.wait_for(asyncio.gather(*(batcher.submit(n) for n in range(3))), 5)
