"""PixelBudget: admission by pixels, FIFO per priority, high first, never a deadlock."""

from __future__ import annotations

import asyncio

import pytest

from function.engine.budget import DEFAULT_PIXELS_PER_JOB, PixelBudget, pixel_budget


async def _settle() -> None:
    """Let every ready task run."""
    for _ in range(5):
        await asyncio.sleep(0)


def _waiter(budget: PixelBudget, pixels: int, *, high: bool = False) -> asyncio.Task[bool]:
    return asyncio.ensure_future(budget.acquire(pixels, high=high))


def test_default_is_four_batches_of_typical_photos() -> None:
    assert pixel_budget(0, 8) == 4 * 8 * DEFAULT_PIXELS_PER_JOB
    assert pixel_budget(1234, 8) == 1234


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PixelBudget(0)


async def test_acquire_within_capacity_and_release() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(60)
    assert await budget.acquire(40)
    assert budget.held == 100
    assert not budget.try_acquire(1)
    budget.release(100)
    assert budget.held == 0


async def test_release_more_than_held_or_negative_is_an_error() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(10)
    with pytest.raises(ValueError, match="only 10 are held"):
        budget.release(11)
    with pytest.raises(ValueError, match="negative"):
        budget.release(-1)
    with pytest.raises(ValueError, match="negative"):
        budget.try_acquire(-1)


async def test_waiter_is_granted_when_pixels_come_back() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(80)
    waiting = _waiter(budget, 50)
    await _settle()
    assert not waiting.done() and budget.waiting() == 1
    budget.release(80)
    assert await waiting
    assert budget.held == 50 and budget.waiting() == 0


async def test_larger_than_the_budget_is_admitted_alone() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(1000)  # nothing held: admitted
    budget.release(1000)
    assert budget.try_acquire(10)
    huge = _waiter(budget, 1000)
    await _settle()
    assert not huge.done()  # something else is held
    budget.release(10)
    assert await huge
    assert budget.held == 1000
    assert not budget.try_acquire(1)  # and it stays alone


async def test_fifo_a_big_waiter_is_not_overtaken_by_small_ones() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(60)
    big = _waiter(budget, 90)
    await _settle()
    small = _waiter(budget, 10)
    await _settle()
    assert not small.done()  # 10 would fit, but the big one is first in line
    assert not budget.try_acquire(10)
    budget.release(60)
    assert await big
    await _settle()
    assert await small
    assert budget.held == 100


async def test_grants_follow_arrival_order() -> None:
    budget = PixelBudget(10)
    assert budget.try_acquire(10)
    order: list[int] = []

    async def take(index: int) -> None:
        await budget.acquire(10)
        order.append(index)
        await asyncio.sleep(0)
        budget.release(10)

    tasks = [asyncio.ensure_future(take(i)) for i in range(5)]
    await _settle()
    budget.release(10)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]


async def test_high_priority_goes_before_waiting_normal_jobs() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(100)
    normal = _waiter(budget, 50)
    await _settle()
    assert not budget.try_acquire(10)  # normal: behind the waiting normal job
    assert budget.waiting_ahead(high=True) == 0
    high = _waiter(budget, 50, high=True)
    await _settle()
    budget.release(50)
    assert await high
    assert not normal.done()
    budget.release(50)
    assert await normal


async def test_high_is_not_blocked_by_a_normal_waiter_that_does_not_fit() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(50)
    normal = _waiter(budget, 80)
    await _settle()
    assert budget.try_acquire(30, high=True)  # fits, and no high job waits ahead
    assert not normal.done()
    budget.release(80)
    assert await normal


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(60)
    big = _waiter(budget, 90)
    await _settle()
    small = _waiter(budget, 30)
    await _settle()
    assert not small.done()
    big.cancel()
    await _settle()
    assert await small  # the head left: 60 + 30 fit
    assert budget.held == 90 and budget.waiting() == 0


async def test_cancelled_after_the_grant_gives_the_pixels_back() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(100)
    waiting = _waiter(budget, 70)
    await _settle()
    budget.release(100)  # granted, but the task has not resumed yet
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.held == 0


async def test_abort_stops_waiting_and_holds_nothing() -> None:
    budget = PixelBudget(100)
    assert budget.try_acquire(100)
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(budget.acquire(50, abort=stop))
    await _settle()
    stop.set()
    assert await waiting is False
    assert budget.held == 100 and budget.waiting() == 0
    assert await budget.acquire(50, abort=stop) is False  # already set: no wait
    budget.release(100)
    assert await budget.acquire(50, abort=stop) is True  # free pixels are still taken


async def test_many_jobs_of_mixed_sizes_all_finish() -> None:
    """Random sizes (some over the budget) and priorities: everyone gets through."""
    budget = PixelBudget(100)
    done: list[int] = []

    async def job(index: int) -> None:
        pixels = (index * 37) % 150 + 1
        await budget.acquire(pixels, high=index % 3 == 0)
        assert budget.held <= 100 or budget.held == pixels
        await asyncio.sleep(0.001 * (index % 4))
        budget.release(pixels)
        done.append(index)

    await asyncio.wait_for(asyncio.gather(*(job(i) for i in range(60))), 10)
    assert sorted(done) == list(range(60))
    assert budget.held == 0 and budget.waiting() == 0
