"""The priority batcher: high first, bounded waits, no wait when nothing more is coming."""

from __future__ import annotations

import asyncio
import time

from function.contract.settings import Priority
from function.engine.batcher import PriorityBatcher


async def test_high_is_taken_before_normal_and_batches_are_bounded() -> None:
    batcher: PriorityBatcher[str] = PriorityBatcher(max_batch=3, max_wait=0)
    batcher.extend(Priority.NORMAL, ["n1", "n2", "n3"])
    batcher.extend(Priority.HIGH, ["h1", "h2"])
    assert await batcher.take() == ["h1", "h2", "n1"]
    assert await batcher.take() == ["n2", "n3"]
    assert len(batcher) == 0


async def test_waits_for_a_batch_to_fill_while_more_is_expected() -> None:
    batcher: PriorityBatcher[int] = PriorityBatcher(max_batch=4, max_wait=5.0)
    batcher.put(Priority.NORMAL, 1)

    async def feed() -> None:
        for item in (2, 3, 4):
            await asyncio.sleep(0.01)
            batcher.put(Priority.NORMAL, item)

    task = asyncio.create_task(feed())
    assert await asyncio.wait_for(batcher.take(), 2) == [1, 2, 3, 4]
    await task


async def test_wait_is_bounded_by_max_wait() -> None:
    batcher: PriorityBatcher[int] = PriorityBatcher(max_batch=4, max_wait=0.05)
    batcher.put(Priority.NORMAL, 1)
    start = time.monotonic()
    assert await batcher.take() == [1]
    assert time.monotonic() - start >= 0.04


async def test_no_wait_when_nothing_more_is_expected() -> None:
    batcher: PriorityBatcher[int] = PriorityBatcher(4, max_wait=30.0, more_expected=lambda: False)
    batcher.put(Priority.HIGH, 7)
    assert await asyncio.wait_for(batcher.take(), 1) == [7]


async def test_close_wakes_a_waiting_take_and_drain_empties() -> None:
    batcher: PriorityBatcher[int] = PriorityBatcher(max_batch=2, max_wait=10)
    waiter = asyncio.create_task(batcher.take())
    await asyncio.sleep(0.01)
    batcher.close()
    assert await asyncio.wait_for(waiter, 1) == []
    batcher.extend(Priority.NORMAL, [1])
    batcher.extend(Priority.HIGH, [2])
    assert batcher.drain() == [2, 1]
