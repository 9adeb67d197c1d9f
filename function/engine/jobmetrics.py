"""`JobMetrics`: the worker's per-job Prometheus series with their labels resolved once.

`Counter.labels(...)` looks the child up under a lock on every call; the job path
records seven series per job, so the children are kept here, per function, and per
status, error code and tenant label as they first occur (all bounded sets).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from function.telemetry import METRICS, tenant_label

__all__ = ["JobMetrics"]


class JobMetrics:
    """One function's job-path series (`surge_jobs_total`, latency, queue wait, ...)."""

    def __init__(self, function: str, tenants: Collection[str]) -> None:
        self.function = function
        self._tenants = tenants
        self.in_flight = METRICS.in_flight.labels(function)
        self.latency = METRICS.latency.labels(function)
        self.queue_wait = METRICS.queue_wait.labels(function)
        self.batch_size = METRICS.batch_size.labels(function)
        self.inference = METRICS.inference.labels(function)
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, key: tuple[str, ...], make: Any) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = make()
        return child

    def finished(self, tenant: str | None, status: str, code: str = "") -> None:
        """Count one settled job by status and code, and for its tenant."""
        label = tenant_label(tenant, self._tenants)
        fn = self.function
        self._child(("jobs", status, code), lambda: METRICS.jobs.labels(fn, status, code)).inc()
        self._child(
            ("tenant_jobs", label, status),
            lambda: METRICS.tenant_jobs.labels(fn, label, status),
        ).inc()

    def compute(self, tenant: str | None, seconds: float) -> None:
        """Add a job's share of its batch's model time to its tenant's."""
        label = tenant_label(tenant, self._tenants)
        fn = self.function
        self._child(
            ("tenant_compute", label), lambda: METRICS.tenant_compute.labels(fn, label)
        ).inc(seconds)
