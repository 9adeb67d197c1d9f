"""Dynamic batching: priority buffers and the wait for a batch to fill.

JetStream's `fetch(n)` returns what is there at once, so batches are built here:
`take()` waits for the first ready item, then up to `max_wait` seconds more for the
batch to fill to `max_batch` (Triton's `max_queue_delay` idea), but only while
`more_expected()` says more work is on its way (JetStream tells each message how many
are still pending), so a lone job never waits. It always takes `high` before `normal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from function.contract.settings import Priority

__all__ = ["PriorityBatcher"]

T = TypeVar("T")

_ORDER = (Priority.HIGH, Priority.NORMAL)


class PriorityBatcher(Generic[T]):
    """Per-priority FIFO buffers with a batch-forming `take()`."""

    def __init__(
        self, max_batch: int, max_wait: float, more_expected: Callable[[], bool] = lambda: True
    ) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._more_expected = more_expected
        self._buffers: dict[Priority, deque[T]] = {p: deque() for p in _ORDER}
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def pending(self, priority: Priority) -> int:
        return len(self._buffers[priority])

    def put(self, priority: Priority, item: T) -> None:
        self._buffers[priority].append(item)
        self._changed.set()

    def close(self) -> None:
        """Wake a waiting `take()`; it returns what is buffered, then empty lists."""
        self._closed = True
        self._changed.set()

    def drain(self) -> list[T]:
        """Remove and return every buffered item (high first)."""
        items: list[T] = []
        for priority in _ORDER:
            items.extend(self._buffers[priority])
            self._buffers[priority].clear()
        return items

    async def _wait_change(self, timeout: float | None) -> None:
        self._changed.clear()
        if timeout is None:
            await self._changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def take(self) -> list[T]:
        """The next batch: at least one item unless closed and empty."""
        while not len(self):
            if self._closed:
                return []
            await self._wait_change(None)
        deadline = time.monotonic() + self.max_wait
        while len(self) < self.max_batch and not self._closed and self._more_expected():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait_change(remaining)
        return self._pop(self.max_batch)

    def _pop(self, count: int) -> list[T]:
        batch: list[T] = []
        for priority in _ORDER:
            buffer = self._buffers[priority]
            while buffer and len(batch) < count:
                batch.append(buffer.popleft())
        return batch

    def extend(self, priority: Priority, items: Iterable[T]) -> None:
        for item in items:
            self.put(priority, item)
