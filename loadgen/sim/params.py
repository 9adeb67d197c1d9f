"""Inputs of the scaling simulator: service, cold start, autoscaler policies; and outputs.

Every field has a default and a description; the report prints them all, because a
simulated figure is only as good as the assumptions behind it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "Autoscaler",
    "ColdStart",
    "PolicyResult",
    "ServiceModel",
    "SimPoint",
    "SimReport",
]


class ServiceModel(BaseModel):
    """One replica: a batch of `b` jobs takes `batch_overhead_s + per_job_s * b`."""

    max_batch: int = Field(default=8, ge=1, description="Largest batch a replica runs.")
    batch_overhead_s: float = Field(default=0.015, ge=0, description="Fixed cost of one batch (s).")
    per_job_s: float = Field(default=0.005, gt=0, description="Extra cost per job in a batch (s).")

    def batch_time(self, batch: float) -> float:
        return self.batch_overhead_s + self.per_job_s * batch

    def throughput(self, batch: float) -> float:
        """Jobs/s of one busy replica running batches of `batch`."""
        return batch / self.batch_time(batch)

    @property
    def max_throughput(self) -> float:
        return self.throughput(self.max_batch)

    @classmethod
    def from_bench(cls, record: dict[str, Any]) -> ServiceModel:
        """From a `make bench` record: measured worker img/s at its batch size."""
        rate = float(record["compute"]["worker_img_s"])
        return cls(max_batch=int(record.get("batch", 1)), batch_overhead_s=0.0, per_job_s=1 / rate)


class ColdStart(BaseModel):
    """Request to ready for one new replica (each on its own GPU node)."""

    node_s: float = Field(default=60.0, ge=0, description="GPU node from the cluster autoscaler.")
    image_s: float = Field(
        default=25.0, ge=0, description="Image pull (CUDA + ONNX Runtime layers)."
    )
    model_s: float = Field(default=5.0, ge=0, description="Model load and session create.")
    warmup_s: float = Field(
        default=3.0, ge=0, description="Warmup inference at the batch sizes used."
    )

    @property
    def total(self) -> float:
        return self.node_s + self.image_s + self.model_s + self.warmup_s


class Autoscaler(BaseModel):
    """KEDA (0 <-> 1, polling, cooldown) + HPA (1 <-> N, sync, behaviour) for one policy."""

    polling_interval_s: float = Field(default=30.0, gt=0, description="KEDA pollingInterval.")
    cooldown_s: float = Field(default=300.0, ge=0, description="KEDA cooldownPeriod (to zero).")
    activation_lag: float = Field(default=0.0, ge=0, description="activationLagThreshold.")
    lag_threshold: float = Field(default=10.0, gt=0, description="Target lag per replica (HPA).")
    hpa_sync_s: float = Field(default=15.0, gt=0, description="HPA controller sync period.")
    tolerance: float = Field(default=0.1, ge=0, description="HPA tolerance around the target.")
    up_pods: int = Field(default=4, ge=0, description="scaleUp: pods/period.")
    up_percent: float = Field(
        default=100.0, ge=0, description="scaleUp policy: percent per period."
    )
    down_window_s: float = Field(default=300.0, ge=0, description="scaleDown stabilization window.")
    down_pods: int = Field(
        default=0, ge=0, description="scaleDown policy: pods per period (0: off)."
    )
    down_percent: float = Field(
        default=100.0, ge=0, description="scaleDown policy: percent/period."
    )
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=100, ge=1)
    push: bool = Field(default=False, description="external-push: active pushed on the first job.")
    push_latency_s: float = Field(default=0.5, ge=0, description="Job landing to KEDA activation.")
    demand: bool = Field(default=False, description="Surge's replica demand as an HPA metric.")
    drain_target_s: float = Field(default=30.0, gt=0, description="Demand: drain backlog within.")
    rate_window_s: float = Field(default=5.0, gt=0, description="Demand: arrival-rate window.")
    prewarm: bool = Field(default=False, description="Scheduled pre-warm for the known campaign.")

    def describe(self) -> str:
        parts = [
            f"poll {self.polling_interval_s:g}s",
            f"cooldown {self.cooldown_s:g}s",
            f"lagThreshold {self.lag_threshold:g}",
            f"HPA sync {self.hpa_sync_s:g}s",
            f"up max({self.up_pods} pods, {self.up_percent:g}%)/sync",
            f"down window {self.down_window_s:g}s",
            f"max {self.max_replicas}",
        ]
        if self.push:
            parts.append(f"push activation {self.push_latency_s:g}s")
        if self.demand:
            parts.append(f"demand: drain within {self.drain_target_s:g}s")
        if self.prewarm:
            parts.append("pre-warm for the campaign")
        return ", ".join(parts)


class SimPoint(BaseModel):
    """One second of one policy: replicas (all, ready) and backlog at its start."""

    t: int
    replicas: int
    ready: int
    backlog: float


class PolicyResult(BaseModel):
    """What one policy cost and how the jobs fared under it."""

    policy: str
    description: str
    gpu_seconds: float = Field(description="Replica-seconds from pod creation (incl. cold start).")
    cost: float = Field(description="gpu_seconds / 3600 * price per GPU hour.")
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    peak_backlog: float
    peak_replicas: int
    first_ready_s: float | None = Field(
        description="When the first replica it asked for was ready."
    )
    served: float
    unserved: float = Field(description="Jobs still queued at the end of the horizon.")
    timeline: list[SimPoint] = Field(default_factory=list)


class SimReport(BaseModel):
    """A simulation: the assumptions, then one result per policy."""

    profile: str
    profile_points: list[tuple[float, float]]
    seed: int
    arrivals: str
    horizon_s: float
    dt_s: float
    price_per_gpu_hour: float
    initial_replicas: int = Field(description="Ready at t=0 under every scaling policy.")
    service: ServiceModel
    cold_start: ColdStart
    policies: dict[str, Autoscaler] = Field(description="KEDA/HPA settings per policy.")
    results: list[PolicyResult]

    def assumptions(self) -> list[str]:
        """The assumptions, one line each, for printing with every report."""
        s, c = self.service, self.cold_start
        lines = [
            f"profile {self.profile}: {len(self.profile_points)} points, horizon "
            f"{self.horizon_s:g} s, {self.arrivals} arrivals, seed {self.seed}, "
            f"tick {self.dt_s:g} s",
            f"replica: batch <= {s.max_batch}, batch time {s.batch_overhead_s * 1000:g} ms + "
            f"{s.per_job_s * 1000:g} ms/job -> {s.max_throughput:.1f} jobs/s at full batch",
            f"cold start {c.total:g} s = node {c.node_s:g} + image {c.image_s:g} + model "
            f"{c.model_s:g} + warmup {c.warmup_s:g} (every new replica pays it)",
            f"cost: GPU-seconds from pod creation to removal, {self.price_per_gpu_hour:g}/GPU-hour",
            "queue: one shared FIFO (JetStream work queue); a removed replica loses no job",
            f"start: {self.initial_replicas} replica(s) ready at t=0 under every scaling policy "
            "(enough for the rate at t=0: the baseline was already running)",
        ]
        lines += [f"{result.policy}: {result.description}" for result in self.results]
        return lines


def ceil_div(value: float, unit: float) -> int:
    """ceil(value / unit) with a little slack for float noise; 0 for value <= 0."""
    return 0 if value <= 1e-9 else math.ceil(value / unit - 1e-9)
