"""`PixelBudget`: how many decoded pixels a worker may hold at once.

Jobs acquire the pixels their decoded image will take before decoding it and release
them when they settle, so a worker's image memory is bounded by pixels, not by how many
jobs it holds. Waiters are served in order, high priority first, each queue FIFO: a
waiter that does not fit blocks those behind it (a large image is never starved by a
stream of small ones). A request larger than the whole budget is granted alone, once
nothing else is held, so no image under the pixel limit can wait forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

__all__ = ["DEFAULT_PIXELS_PER_JOB", "PixelBudget", "pixel_budget"]

DEFAULT_PIXELS_PER_JOB = 4_000_000  # a typical photo; the default budget is in these


def pixel_budget(setting: int, max_batch: int) -> int:
    """The budget `SURGE_PIXEL_BUDGET` asks for; 0: `4 x max_batch` typical photos."""
    return setting or 4 * max_batch * DEFAULT_PIXELS_PER_JOB


@dataclass(eq=False)
class _Waiter:
    pixels: int
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PixelBudget:
    """A counting semaphore over pixels with two FIFO queues (high before normal).

    Not thread-safe: use it from one event loop.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"pixel budget must be positive, not {capacity}")
        self.capacity = capacity
        self.held = 0
        self._queues: dict[bool, deque[_Waiter]] = {True: deque(), False: deque()}

    def waiting(self, *, high: bool | None = None) -> int:
        """Waiters at one priority (`high` True or False), or at both (None)."""
        if high is None:
            return len(self._queues[True]) + len(self._queues[False])
        return len(self._queues[high])

    def waiting_ahead(self, *, high: bool) -> int:
        """Waiters a new request at this priority would queue behind."""
        return self.waiting(high=True) if high else self.waiting()

    def _fits(self, pixels: int) -> bool:
        return self.held == 0 or self.held + pixels <= self.capacity

    def try_acquire(self, pixels: int, *, high: bool = False) -> bool:
        """Take `pixels` now if they fit and nobody is waiting ahead; never blocks."""
        _check(pixels)
        if self.waiting_ahead(high=high) or not self._fits(pixels):
            return False
        self.held += pixels
        return True

    async def acquire(
        self, pixels: int, *, high: bool = False, abort: asyncio.Event | None = None
    ) -> bool:
        """Wait for `pixels`; True once held, False if `abort` was set first."""
        if self.try_acquire(pixels, high=high):
            return True
        if abort is not None and abort.is_set():
            return False
        waiter = _Waiter(pixels)
        self._queues[high].append(waiter)
        try:
            await _wait(waiter.granted, abort)
        except BaseException:  # cancelled: give back whatever this waiter got
            self._withdraw(waiter, high)
            raise
        if waiter.granted.done() and not waiter.granted.cancelled():
            return True
        self._withdraw(waiter, high)
        return False

    def _withdraw(self, waiter: _Waiter, high: bool) -> None:
        if waiter.granted.done() and not waiter.granted.cancelled():
            self.release(waiter.pixels)
            return
        waiter.granted.cancel()
        with contextlib.suppress(ValueError):
            self._queues[high].remove(waiter)
        self._grant()  # the head may have changed

    def release(self, pixels: int) -> None:
        """Give back `pixels` (taken earlier) and wake the waiters that now fit."""
        _check(pixels)
        if pixels > self.held:
            raise ValueError(f"releasing {pixels} pixels but only {self.held} are held")
        self.held -= pixels
        self._grant()

    def _grant(self) -> None:
        for high in (True, False):
            queue = self._queues[high]
            while queue:
                head = queue[0]
                if not self._fits(head.pixels):
                    return  # strict order: nobody overtakes a waiter that does not fit
                queue.popleft()
                self.held += head.pixels
                head.granted.set_result(None)


async def _wait(granted: asyncio.Future[None], abort: asyncio.Event | None) -> None:
    """Until `granted` is done or `abort` is set."""
    if abort is None:
        await granted
        return
    aborted = asyncio.ensure_future(abort.wait())
    try:
        await asyncio.wait((granted, aborted), return_when=asyncio.FIRST_COMPLETED)
    finally:
        aborted.cancel()


def _check(pixels: int) -> None:
    if pixels < 0:
        raise ValueError(f"pixel count must not be negative, not {pixels}")
