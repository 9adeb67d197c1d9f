"""A background loop: `tick()` every `interval_s`, or at once when poked, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["Periodic"]

log = logging.getLogger("surge.periodic")


class Periodic:
    """Runs `tick()` in a task; a failing tick is logged and the loop goes on."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    def poke(self) -> None:
        """Tick now instead of at the end of the interval."""
        self._poked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.interval_s)
            self._poked.clear()
            try:
                await self.tick()
            except Exception as exc:  # the server may be away; try again next round
                log.debug("%s failed: %r", type(self).__name__, exc)
