"""Recreate the streams and consumers a NATS server lost.

A server that comes back with an empty store (a lost volume, memory storage) has no
jobs stream and no consumers; pulls then end with status 503 and the worker would wait
forever. `TopologyWatch` checks every few seconds, and at once when the consumer
reports a failing pull: anything missing makes the worker unready and is recreated
with `ensure_topology` (the same code that created it), logged and counted.

It also follows the tenants: a tenant's stream added (`surge tenants add`) gets this
function's consumers and is handed to `on_tenants`, as is one removed, and quota
changes; so workers take a new tenant's jobs without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from function.contract.quota import TenantQuota
from function.contract.settings import Priority, WorkerSettings
from function.telemetry import METRICS
from function.transport.connection import Trouble
from function.transport.periodic import Periodic
from function.transport.tenants import (
    ensure_tenant_blobs,
    ensure_tenant_consumers,
    list_tenants,
)
from function.transport.topology import ensure_topology, missing_topology

__all__ = ["TenantConsumers", "TopologyWatch"]

log = logging.getLogger("surge.recovery")

# tenant -> (its quota, this function's consumers on its stream)
TenantConsumers = dict[str, tuple[TenantQuota, dict[Priority, str]]]


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
        self.tenants: TenantConsumers = {}
        self.on_tenants: Callable[[TenantConsumers], Awaitable[None]] | None = None

    async def tick(self) -> None:
        await self.check()

    async def follow_tenants(self) -> None:
        """Attach to tenants added since the last look; report any change."""
        found = await list_tenants(self._js)
        tenants: TenantConsumers = {}
        for tenant, quota in found.items():
            known = self.tenants.get(tenant)
            if known is None:  # new; one NACK (or an operator) made needs its bucket too
                await ensure_tenant_blobs(self._js, tenant, self._settings)
                consumers = await ensure_tenant_consumers(self._js, self._settings, tenant)
            else:
                consumers = known[1]
            tenants[tenant] = (quota, consumers)
        if tenants == self.tenants:
            return
        added = sorted(set(tenants) - set(self.tenants))
        gone = sorted(set(self.tenants) - set(tenants))
        log.info("tenants: %s (added %s, removed %s)", sorted(tenants), added, gone)
        self.tenants = tenants
        if self.on_tenants is not None:
            await self.on_tenants(tenants)

    async def check(self) -> list[str]:
        """Recreate whatever is missing (and follow the tenants); return what was missing."""
        missing = await self._recover()
        await self.follow_tenants()
        return missing

    async def _recover(self) -> list[str]:
        missing = await missing_topology(self._js, self._settings)
        for tenant in list(self.tenants):
            try:
                await ensure_tenant_consumers(self._js, self._settings, tenant)
            except NotFoundError:  # the tenant was removed: follow_tenants drops it
                continue
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
