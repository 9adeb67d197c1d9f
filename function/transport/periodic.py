"""Background loops: `Periodic` ticks every `interval_s` until stopped; `end_task` stops one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

__all__ = ["Periodic", "end_task"]

log = logging.getLogger("surge.periodic")


async def end_task(task: asyncio.Task[Any], timeout_s: float = 10.0) -> bool:
    """Cancel `task` until it ends; False if it outlived `timeout_s`.

    One cancellation is not always enough: Python 3.11's `wait_for` (used by nats-py's
    requests) returns its result instead of raising when a cancel lands the moment the
    inner call completes, and the loop goes on. So cancel again until the task is done.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.warning("task %s did not stop within %.1f s", task.get_name(), timeout_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(left, 0.5))
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())
    return True


class Periodic:
    """Runs `tick()` in a task; a failing tick is logged and the loop goes on."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def tick(self) -> None:
        raise NotImplementedError

    def poke(self) -> None:
        """Tick now instead of at the end of the interval."""
        self._poked.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=type(self).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True  # ends the loop even if a cancellation is swallowed
            await end_task(task)

    async def _loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.interval_s)
            self._poked.clear()
            if self._stopping:
                return
            try:
                await self.tick()
            except Exception as exc:  # the server may be away; try again next round
                log.debug("%s failed: %r", type(self).__name__, exc)
