"""Background loops stop even when a cancellation is swallowed (nats-py, Python 3.11 wait_for)."""

from __future__ import annotations

import asyncio
import contextlib

from function.transport.periodic import Periodic, end_task


async def _swallows_cancels(times: int) -> None:
    for _ in range(times):
        # what wait_for does when the inner call completes with the cancel
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
    await asyncio.sleep(3600)


async def test_end_task_cancels_again_until_the_task_ends() -> None:
    task = asyncio.create_task(_swallows_cancels(3))
    await asyncio.sleep(0)
    assert await end_task(task, timeout_s=5)
    assert task.cancelled()


async def test_end_task_gives_up_after_its_timeout() -> None:
    stubborn = True

    async def until_let_go() -> None:
        while stubborn:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(until_let_go())
    await asyncio.sleep(0)
    assert not await end_task(task, timeout_s=0.3)
    assert not task.done()
    stubborn = False
    assert await end_task(task, timeout_s=5)


class _SwallowingTicker(Periodic):
    """A tick that eats the first cancellation, as a request can."""

    def __init__(self) -> None:
        super().__init__(interval_s=0.01)
        self.ticks = 0
        self.entered = asyncio.Event()

    async def tick(self) -> None:
        self.ticks += 1
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)


async def test_a_periodic_loop_stops_although_its_tick_swallowed_the_cancel() -> None:
    ticker = _SwallowingTicker()
    ticker.start()
    await asyncio.wait_for(ticker.entered.wait(), 5)
    await asyncio.wait_for(ticker.stop(), 5)
    ticks = ticker.ticks
    await asyncio.sleep(0.05)
    assert ticker.ticks == ticks


async def test_a_failing_tick_does_not_end_the_loop() -> None:
    class Failing(Periodic):
        ticks = 0

        async def tick(self) -> None:
            self.ticks += 1
            raise RuntimeError("server away")

    loop = Failing(interval_s=0.01)
    loop.start()
    await asyncio.sleep(0.1)
    await loop.stop()
    assert loop.ticks >= 2


async def test_poke_ticks_at_once() -> None:
    class Counting(Periodic):
        ticks = 0

        async def tick(self) -> None:
            self.ticks += 1

    loop = Counting(interval_s=3600)
    loop.start()
    loop.poke()
    for _ in range(100):
        if loop.ticks:
            break
        await asyncio.sleep(0.01)
    await loop.stop()
    assert loop.ticks == 1
