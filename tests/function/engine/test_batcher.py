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


async def test_a_limit_takes_fewer_without_waiting_to_fill() -> None:
    batcher: PriorityBatcher[int] = PriorityBatcher(max_batch=4, max_wait=30.0)
    batcher.extend(Priority.NORMAL, [1, 2, 3, 4, 5])
    assert await asyncio.wait_for(batcher.take(limit=1), 1) == [1]
    assert await asyncio.wait_for(batcher.take(limit=9), 1) == [2, 3, 4, 5]  # max_batch caps
    batcher.put(Priority.NORMAL, 6)
    assert await asyncio.wait_for(batcher.take(limit=0), 1) == [6]  # at least one


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


async def test_sources_take_turns_within_a_priority() -> None:
    """A tenant's backlog does not hold back another's: one job from each in turn."""
    batcher: PriorityBatcher[str] = PriorityBatcher(max_batch=4, max_wait=0)
    batcher.extend(Priority.NORMAL, [f"a{i}" for i in range(6)], source="a")
    batcher.put(Priority.NORMAL, "b0", source="b")
    batcher.put(Priority.NORMAL, "open0")
    assert batcher.pending(Priority.NORMAL) == 8
    assert batcher.pending(Priority.NORMAL, "a") == 6
    assert await batcher.take() == ["a0", "b0", "open0", "a1"]
    assert await batcher.take() == ["a2", "a3", "a4", "a5"]
    assert len(batcher) == 0


async def test_priority_still_holds_across_sources() -> None:
    batcher: PriorityBatcher[str] = PriorityBatcher(max_batch=3, max_wait=0)
    batcher.extend(Priority.NORMAL, ["a-n1", "a-n2"], source="a")
    batcher.put(Priority.HIGH, "b-h1", source="b")
    batcher.put(Priority.HIGH, "a-h1", source="a")
    assert await batcher.take() == ["b-h1", "a-h1", "a-n1"]
    assert batcher.drain() == ["a-n2"]
    assert len(batcher) == 0
