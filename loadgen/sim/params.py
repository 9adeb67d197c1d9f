"""Inputs of the scaling simulator: service, cold start, autoscaler policies; and outputs.

Every field has a default and a description; the report prints them all, because a
simulated figure is only as good as the assumptions behind it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from scaler.config import ScalerMetadata

__all__ = [
    "HPA_SCALE_DOWN",
    "HPA_SCALE_UP",
    "Autoscaler",
    "ColdStart",
    "PolicyResult",
    "ScalePolicy",
    "ScaleRules",
    "ScalerView",
    "ServiceModel",
    "SimPoint",
    "SimReport",
    "split_settings",
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

    @property
    def process_s(self) -> float:
        """Process start to ready: the part a worker's heartbeat reports as its cold start."""
        return self.model_s + self.warmup_s


class ScalePolicy(BaseModel):
    """One HPA scaling policy: at most `value` pods, or percent, per `period_s`."""

    kind: Literal["Pods", "Percent"]
    value: int = Field(ge=1)
    period_s: float = Field(gt=0)

    def text(self) -> str:
        pods = "pod" if self.value == 1 else "pods"
        amount = f"{self.value} {pods}" if self.kind == "Pods" else f"{self.value}%"
        return f"{amount}/{self.period_s:g}s"


class ScaleRules(BaseModel):
    """One direction of the HPA's `behavior`: stabilization window, policies, selectPolicy."""

    window_s: float = Field(ge=0, description="stabilizationWindowSeconds.")
    select: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[ScalePolicy, ...] = Field(min_length=1)

    def text(self) -> str:
        if self.select == "Disabled":
            return "disabled"
        rules = ", ".join(p.text() for p in self.policies)
        chosen = rules if len(self.policies) == 1 else f"{self.select.lower()}({rules})"
        return f"window {self.window_s:g}s then {chosen}"


# The HPA's own behavior when a ScaledObject sets none (autoscaling/v2 defaults).
HPA_SCALE_UP = ScaleRules(
    window_s=0,
    policies=(
        ScalePolicy(kind="Pods", value=4, period_s=15),
        ScalePolicy(kind="Percent", value=100, period_s=15),
    ),
)
HPA_SCALE_DOWN = ScaleRules(
    window_s=300, policies=(ScalePolicy(kind="Percent", value=100, period_s=15),)
)


class Autoscaler(BaseModel):
    """KEDA (0 <-> 1: polling, cooldown) + HPA (1 <-> N: sync, behavior) for one policy.

    The defaults are KEDA's and the HPA's own, what a ScaledObject that sets nothing
    gets; `loadgen.sim.manifest` reads the shipped ScaledObject into one of these.
    """

    polling_interval_s: float = Field(default=30.0, gt=0, description="KEDA pollingInterval.")
    cooldown_s: float = Field(default=300.0, ge=0, description="KEDA cooldownPeriod (to zero).")
    min_replicas: int = Field(default=0, ge=0, description="minReplicaCount.")
    max_replicas: int = Field(default=100, ge=1, description="maxReplicaCount.")
    lag_trigger: bool = Field(default=True, description="nats-jetstream triggers (the lag).")
    lag_threshold: float = Field(default=10.0, gt=0, description="lagThreshold (per replica).")
    activation_lag: float = Field(default=0.0, ge=0, description="activationLagThreshold.")
    push: ScalerMetadata | None = Field(
        default=None, description="The external-push trigger's metadata (Surge's scaler)."
    )
    push_latency_s: float = Field(default=0.5, ge=0, description="Job landing to KEDA activation.")
    prewarm: bool = Field(default=False, description="A pre-warm plan for the campaign.")
    hpa_sync_s: float = Field(default=15.0, gt=0, description="HPA controller sync period.")
    tolerance: float = Field(default=0.1, ge=0, description="HPA tolerance around the target.")
    scale_up: ScaleRules = Field(default=HPA_SCALE_UP, description="behavior.scaleUp.")
    scale_down: ScaleRules = Field(default=HPA_SCALE_DOWN, description="behavior.scaleDown.")

    def settings(self) -> dict[str, str]:
        """Every setting as `name: value` text, in the ScaledObject's words."""
        triggers = ["nats-jetstream"] if self.lag_trigger else []
        triggers += ["external-push"] if self.push is not None else []
        out = {"triggers": " + ".join(triggers) or "none"}
        out["pollingInterval"] = f"{self.polling_interval_s:g}s"
        if self.lag_trigger:
            out["lagThreshold"] = f"{self.lag_threshold:g}"
            out["activationLagThreshold"] = f"{self.activation_lag:g}"
        if self.push is not None:
            out["push activation"] = f"{self.push_latency_s:g}s"
            out["targetDrainSeconds"] = f"{self.push.target_drain_s:g}"
            out["activationRate"] = f"{self.push.active_rate:g}"
            out["prewarmMarginSeconds"] = f"{self.push.prewarm_margin_s:g}"
            if self.push.max_replicas is not None:
                out["maxReplicas (trigger)"] = str(self.push.max_replicas)
        out |= {
            "cooldownPeriod": f"{self.cooldown_s:g}s",
            "replicas": f"{self.min_replicas}..{self.max_replicas}",
            "HPA sync": f"{self.hpa_sync_s:g}s",
            "HPA tolerance": f"{self.tolerance:g}",
            "scaleUp": self.scale_up.text(),
            "scaleDown": self.scale_down.text(),
        }
        if self.prewarm:
            out["pre-warm plan"] = "the campaign's"
        return out


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


class ScalerView(BaseModel):
    """What Surge's scaler sees in the simulation (its `Observation` of the simulated state)."""

    watch_s: float = Field(description="Watcher poll: consumer state and arrival counter.")
    throughput: float = Field(description="mu: per-replica jobs/s measured from heartbeats.")
    lead_s: float = Field(description="L: cold start measured from heartbeats.")
    lead_source: str


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
    scaledobject: str = Field(description="Where the KEDA/HPA settings came from.")
    scaler: ScalerView
    policies: dict[str, Autoscaler] = Field(description="KEDA/HPA settings per policy.")
    results: list[PolicyResult]

    def assumptions(self) -> list[str]:
        """The assumptions, one line each, for printing with every report."""
        s, c, v = self.service, self.cold_start, self.scaler
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
            f"KEDA/HPA: {self.scaledobject}",
            f"external-push: scaler.policy.decide() on the backlog, lambda from "
            f"scaler.estimate.ArrivalRate fed every {v.watch_s:g} s, mu {v.throughput:.1f} "
            f"jobs/s, L {v.lead_s:g} s ({v.lead_source}), warming replicas from heartbeats",
        ]
        if self.policies:
            shared, _ = split_settings(self.policies)
            lines.append("KEDA/HPA shared: " + ", ".join(f"{k} {v}" for k, v in shared.items()))
        lines += [f"{result.policy}: {result.description}" for result in self.results]
        return lines


def split_settings(
    policies: dict[str, Autoscaler],
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(settings every policy shares, each policy's own settings)."""
    settings = {name: config.settings() for name, config in policies.items()}
    keys = {key for values in settings.values() for key in values}
    shared = {
        key: value
        for key, value in next(iter(settings.values()), {}).items()
        if key in keys and all(values.get(key) == value for values in settings.values())
    }
    own = {
        name: {k: v for k, v in values.items() if k not in shared}
        for name, values in settings.items()
    }
    return shared, own


def ceil_div(value: float, unit: float) -> int:
    """ceil(value / unit) with a little slack for float noise; 0 for value <= 0."""
    return 0 if value <= 1e-9 else math.ceil(value / unit - 1e-9)
