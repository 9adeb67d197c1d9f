"""One NATS connection, one watcher per function, and the decision for a trigger.

    hub = await ScalerHub.connect("nats://127.0.0.1:4222")
    decision = await hub.decide(ScalerMetadata(function="tiny"))
    await hub.close()

The KEDA servicer and the embedded stack both ask the hub, so KEDA and local
replicas follow the same decision code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.client import Client as NATS

from function.contract.nats_auth import NatsAuth
from function.contract.settings import WorkerSettings
from function.transport.connect import open_nats
from scaler.config import ScalerMetadata, ScalerSettings
from scaler.metrics import SCALER_METRICS as M
from scaler.policy import Decision, Policy, decide
from scaler.watcher import FunctionWatcher, WatchError

__all__ = ["ScalerHub"]


class ScalerHub:
    """Watchers by function, started on first use."""

    def __init__(
        self,
        nc: NATS,
        *,
        settings: ScalerSettings | None = None,
        worker: WorkerSettings | None = None,
        wall: Callable[[], float] = time.time,
        own_connection: bool = False,
    ) -> None:
        self.nc = nc
        self.settings = settings or ScalerSettings()
        self.worker = worker or WorkerSettings()
        self.wall = wall
        self._own = own_connection
        self._watchers: dict[str, FunctionWatcher] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        settings: ScalerSettings | None = None,
        worker: WorkerSettings | None = None,
        auth: NatsAuth | None = None,
    ) -> ScalerHub:
        """Connect to NATS (reconnecting for ever once connected; `auth` defaults to the
        `SURGE_NATS_*` environment) and make a hub that owns the connection."""
        nc = await open_nats(url, auth, name="surge-scaler", wait_s=30.0)
        return cls(nc, settings=settings, worker=worker, own_connection=True)

    async def watcher(self, function: str) -> FunctionWatcher:
        """The running watcher of `function`; `WatchError` when it cannot start."""
        found = self._watchers.get(function)
        if found is not None:
            return found
        async with self._lock:
            found = self._watchers.get(function)
            if found is None:
                if not self.nc.is_connected:
                    raise WatchError("NATS is not connected", "unavailable")
                found = FunctionWatcher(
                    self.nc, function, worker=self.worker, settings=self.settings
                )
                await found.start()
                self._watchers[function] = found
            return found

    def decide_now(self, watcher: FunctionWatcher, policy: Policy) -> Decision:
        """Apply `policy` to the watcher's latest state (raises `WatchError` when stale)."""
        decision = decide(watcher.observation(), policy, watcher.windows, self.wall())
        fn = watcher.function
        M.demand.labels(fn).set(decision.demand)
        M.active.labels(fn).set(1 if decision.active else 0)
        M.arrival_rate.labels(fn).set(watcher.arrivals.rate(watcher.clock()))
        M.throughput.labels(fn).set(decision.throughput)
        M.lead.labels(fn).set(decision.lead_s)
        return decision

    async def decide(self, meta: ScalerMetadata) -> Decision:
        """The decision for one trigger's metadata."""
        return self.decide_now(await self.watcher(meta.function), meta.policy())

    async def close(self) -> None:
        for watcher in self._watchers.values():
            await watcher.stop()
        self._watchers.clear()
        if self._own and not self.nc.is_closed:
            with contextlib.suppress(OSError, nats.errors.Error):  # the server is gone
                await (self.nc.drain() if self.nc.is_connected else self.nc.close())
