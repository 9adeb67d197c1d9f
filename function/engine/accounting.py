"""Where a warm worker's time goes: `BusyClock` (seconds with a batch running) and
`WarmMeter` (idle-but-warm and cold-start seconds, exported to Prometheus).

The consumer marks each batch's start and end on its `BusyClock` (overlapping batches
count once). Once the worker is ready, the meter adds its start-to-ready time to
`surge_cold_start_seconds_total` and, every `interval_s`, the part of the interval with
no batch running to `surge_idle_warm_seconds_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from function.telemetry import METRICS

__all__ = ["BusyClock", "WarmMeter"]

Clock = Callable[[], float]


class BusyClock:
    """Seconds during which at least one batch ran (the union of their intervals)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._running = 0
        self._since = 0.0
        self._done = 0.0

    def begin(self) -> None:
        """A batch starts running."""
        if self._running == 0:
            self._since = self._clock()
        self._running += 1

    def end(self) -> None:
        """A batch stops running."""
        if self._running == 0:
            return
        self._running -= 1
        if self._running == 0:
            self._done += self._clock() - self._since

    def busy_s(self) -> float:
        """Busy seconds so far, the running batch's part included."""
        running = self._clock() - self._since if self._running else 0.0
        return self._done + running


class WarmMeter:
    """Counts one ready worker's idle-but-warm seconds, sampled every `interval_s`."""

    def __init__(
        self,
        function: str,
        busy: BusyClock,
        *,
        interval_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._busy = busy
        self._clock = clock
        self._interval_s = interval_s
        self._idle = METRICS.idle_warm.labels(function)
        self._cold = METRICS.cold_start_total.labels(function)
        self._last: tuple[float, float] | None = None  # (clock, busy seconds) at the last tick
        self._task: asyncio.Task[None] | None = None
        self.idle_s = 0.0

    def ready(self, cold_start_s: float) -> None:
        """The worker is warm: count its cold start and start measuring idle time."""
        self._cold.inc(max(cold_start_s, 0.0))
        self._last = (self._clock(), self._busy.busy_s())

    def tick(self) -> float:
        """Add the idle part of the time since the last tick; return it (seconds)."""
        if self._last is None:
            return 0.0
        now, busy = self._clock(), self._busy.busy_s()
        idle = max((now - self._last[0]) - (busy - self._last[1]), 0.0)
        self._last = (now, busy)
        self._idle.inc(idle)
        self.idle_s += idle
        return idle

    def start(self, cold_start_s: float) -> None:
        """`ready`, then tick in the background until `stop`."""
        self.ready(cold_start_s)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.tick()

    async def stop(self) -> None:
        """Stop ticking, counting the idle time up to now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.tick()
        self._last = None
