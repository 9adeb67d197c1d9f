"""Recreate the streams and consumers a NATS server lost.

A server that comes back with an empty store (a lost volume, memory storage) has no
jobs stream and no consumers; pulls then end with status 503 and the worker would wait
forever. `TopologyWatch` checks every few seconds, and at once when the consumer
reports a failing pull: anything missing makes the worker unready and is recreated
with `ensure_topology` (the same code that created it), logged and counted.
"""

from __future__ import annotations

import logging
import time

from nats.js import JetStreamContext

from function.contract.settings import WorkerSettings
from function.telemetry import METRICS
from function.transport.connection import Trouble
from function.transport.periodic import Periodic
from function.transport.topology import ensure_topology, missing_topology

__all__ = ["TopologyWatch"]

log = logging.getLogger("surge.recovery")


class TopologyWatch(Periodic):
    """Keeps the server's streams and consumers present for one function."""

    def __init__(
        self, js: JetStreamContext, settings: WorkerSettings, *, interval_s: float = 5.0
    ) -> None:
        super().__init__(interval_s)
        self._js = js
        self._settings = settings
        self.trouble: Trouble | None = None
        self.recreated = 0

    async def tick(self) -> None:
        await self.check()

    async def check(self) -> list[str]:
        """Recreate whatever is missing; return what was."""
        missing = await missing_topology(self._js, self._settings)
        if not missing:
            self.trouble = None
            return missing
        what = ", ".join(missing)
        if self.trouble is None:
            self.trouble = (f"the server lost {what}", time.monotonic())
        log.warning("the NATS server lost %s: recreating", what)
        await ensure_topology(self._js, self._settings)
        self.recreated += 1
        METRICS.topology_recreated.labels(self._settings.function).inc()
        log.warning("recreated %s", what)
        self.trouble = None
        return missing
