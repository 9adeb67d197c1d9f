"""Prometheus collectors for the scaler (`surge_scaler_*`, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["SCALER_METRICS", "ScalerMetrics"]


class ScalerMetrics:
    """What the scaler sees and decides, per function."""

    def __init__(self) -> None:
        self.pending = Gauge(
            "surge_scaler_pending_jobs", "num_pending over both consumers.", ["function"]
        )
        self.ack_pending = Gauge(
            "surge_scaler_ack_pending_jobs", "num_ack_pending over both consumers.", ["function"]
        )
        self.retrying = Gauge(
            "surge_scaler_retrying_jobs",
            "Ack-pending jobs delivered more than once (no capacity demand).",
            ["function"],
        )
        self.arrival_rate = Gauge(
            "surge_scaler_arrival_rate_jobs_per_second", "Sustained arrival rate.", ["function"]
        )
        self.throughput = Gauge(
            "surge_scaler_replica_throughput_jobs_per_second",
            "Per-replica throughput used by the policy (measured or default).",
            ["function"],
        )
        self.lead = Gauge(
            "surge_scaler_cold_start_lead_seconds",
            "Cold-start lead time used by the policy.",
            ["function"],
        )
        self.demand = Gauge(
            "surge_scaler_replica_demand", "Replica demand reported to KEDA.", ["function"]
        )
        self.active = Gauge("surge_scaler_active", "1 when the function is active.", ["function"])
        self.workers = Gauge(
            "surge_scaler_workers", "Workers seen in heartbeats, by state.", ["function", "state"]
        )
        self.polls = Counter(
            "surge_scaler_polls_total", "Consumer-state polls, by outcome.", ["function", "outcome"]
        )
        self.poll_seconds = Histogram(
            "surge_scaler_poll_seconds",
            "Time for one poll of both consumers.",
            ["function"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.pushes = Counter(
            "surge_scaler_stream_pushes_total",
            "IsActive values pushed on StreamIsActive.",
            ["function", "active"],
        )
        self.requests = Counter(
            "surge_scaler_grpc_requests_total",
            "gRPC calls, by method and code.",
            ["method", "code"],
        )
        self.local_replicas = Gauge(
            "surge_scaler_local_replicas",
            "Worker processes the embedded stack runs (not draining).",
            ["function"],
        )


SCALER_METRICS = ScalerMetrics()
