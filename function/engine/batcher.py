"""Dynamic batching: priority buffers and the wait for a batch to fill.

JetStream's `fetch(n)` returns what is there at once, so batches are built here:
`take()` waits for the first ready item, then up to `max_wait` seconds more for the
batch to fill to `max_batch` (Triton's `max_queue_delay` idea), but only while
`more_expected()` says more work is on its way (JetStream tells each message how many
are still pending), so a lone job never waits. It always takes `high` before `normal`;
within a priority it takes from each source (the open queue, each tenant) in turn, one
job at a time, so one tenant's backlog never holds back another's jobs.
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
    """Per-priority, per-source FIFO buffers with a batch-forming, fair `take()`."""

    def __init__(
        self, max_batch: int, max_wait: float, more_expected: Callable[[], bool] = lambda: True
    ) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._more_expected = more_expected
        self._buffers: dict[Priority, dict[str, deque[T]]] = {p: {} for p in _ORDER}
        self._turns: dict[Priority, deque[str]] = {p: deque() for p in _ORDER}
        self._count = 0
        self._changed = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return self._count

    def pending(self, priority: Priority, source: str | None = None) -> int:
        """Items buffered for `priority` (from one `source`, or from all)."""
        buffers = self._buffers[priority]
        if source is not None:
            return len(buffers.get(source, ()))
        return sum(len(b) for b in buffers.values())

    def put(self, priority: Priority, item: T, source: str = "") -> None:
        """Buffer `item`; `source` is whose turn it waits for (the open queue is "")."""
        buffer = self._buffers[priority].setdefault(source, deque())
        if not buffer:
            self._turns[priority].append(source)
        buffer.append(item)
        self._count += 1
        self._changed.set()

    def close(self) -> None:
        """Wake a waiting `take()`; it returns what is buffered, then empty lists."""
        self._closed = True
        self._changed.set()

    def drain(self) -> list[T]:
        """Remove and return every buffered item (high first)."""
        items: list[T] = []
        for priority in _ORDER:
            for buffer in self._buffers[priority].values():
                items.extend(buffer)
            self._buffers[priority].clear()
            self._turns[priority].clear()
        self._count = 0
        return items

    async def _wait_change(self, timeout: float | None) -> None:
        self._changed.clear()
        if timeout is None:
            await self._changed.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def take(self, limit: int | None = None) -> list[T]:
        """The next batch of at most `max_batch` (or `limit`) items: at least one unless
        closed and empty."""
        size = self.max_batch if limit is None else max(1, min(limit, self.max_batch))
        while not len(self):
            if self._closed:
                return []
            await self._wait_change(None)
        deadline = time.monotonic() + self.max_wait
        while len(self) < size and not self._closed and self._more_expected():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait_change(remaining)
        return self._pop(size)

    def _pop(self, count: int) -> list[T]:
        batch: list[T] = []
        for priority in _ORDER:
            turns, buffers = self._turns[priority], self._buffers[priority]
            while turns and len(batch) < count:
                source = turns.popleft()
                buffer = buffers[source]
                batch.append(buffer.popleft())
                if buffer:
                    turns.append(source)
        self._count -= len(batch)
        return batch

    def extend(self, priority: Priority, items: Iterable[T], source: str = "") -> None:
        for item in items:
            self.put(priority, item, source)
