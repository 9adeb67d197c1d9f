"""The load-run report format (`report.json`): pydantic models, stable field names.

Times are seconds from the run's start (monotonic clock); latencies are milliseconds,
measured from each job's *scheduled* send time, so a slow system shows up as latency
instead of quietly slowing the generator (no coordinated omission).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from scaler.bill import Usage

__all__ = [
    "REPORT_VERSION",
    "Accounting",
    "LatencySummary",
    "RunConfig",
    "RunReport",
    "TimelinePoint",
]

REPORT_VERSION = 1


class LatencySummary(BaseModel):
    """Percentiles of a set of durations, in milliseconds (zeros when empty)."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    p999: float = 0.0
    max: float = 0.0


class Accounting(BaseModel):
    """Where every scheduled job ended up; `missing` must be zero for a passing run."""

    scheduled: int = Field(description="Arrivals the profile produced within the bounds.")
    published: int = Field(description="Handed to NATS (core publish with a reply for the ack).")
    acknowledged: int = Field(description="Stored by JetStream (a PubAck came back).")
    rejected: dict[str, int] = Field(
        default_factory=dict, description="Publishes refused, by reason (no stream, error...)."
    )
    duplicates_acked: int = Field(default=0, description="PubAcks flagged duplicate (id reused).")
    answered_ok: int = 0
    answered_error: dict[str, int] = Field(
        default_factory=dict, description="Error results by error code."
    )
    dead_lettered: int = Field(default=0, description="Jobs of this run found on SURGE_DEAD.")
    recovered_from_store: int = Field(
        0, description="Results not pushed to the inbox but found in SURGE_RESULTS at the end."
    )
    duplicate_results: int = Field(default=0, description="Extra results for an answered job.")
    missing: int = Field(description="Published jobs with no result and no dead letter.")
    missing_ids: list[str] = Field(default_factory=list, description="The first missing ids.")

    @property
    def answered(self) -> int:
        return self.answered_ok + sum(self.answered_error.values())

    @property
    def lost(self) -> int:
        """Jobs the user did not get an outcome for: missing plus refused publishes."""
        return self.missing + sum(self.rejected.values())


class TimelinePoint(BaseModel):
    """One second `[t, t+1)`: rates, and backlog/replicas sampled at its end."""

    t: int
    arrivals: int = Field(description="Jobs published in this second.")
    completions: int = Field(description="Results received in this second.")
    backlog: int | None = Field(
        None, description="num_pending + num_ack_pending over both priority consumers."
    )
    replicas: int | None = Field(
        None, description="Distinct workers reporting ready (None: no heartbeats seen)."
    )
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None


class RunConfig(BaseModel):
    """What was run: profile, bounds, target."""

    profile: str
    profile_description: str
    profile_points: list[tuple[float, float]]
    function: str
    nats_url: str
    seed: int
    high_fraction: float
    max_jobs: int | None
    max_time_s: float | None
    drain_timeout_s: float
    payload_bytes: int
    content_type: str


class RunReport(BaseModel):
    """Everything one load run measured."""

    version: int = REPORT_VERSION
    run_id: str
    started_at: datetime
    config: RunConfig
    ok: bool = Field(description="True when no job is missing and no publish was refused.")
    accounting: Accounting
    latency_ms: LatencySummary = Field(description="Scheduled send time to result received.")
    generator_lag_ms: LatencySummary = Field(
        description="Actual send time minus scheduled send time (the generator's own delay)."
    )
    server_queued_ms: LatencySummary = Field(
        default_factory=LatencySummary, description="Worker-reported queue wait (from results)."
    )
    arrival_phase_s: float
    elapsed_s: float
    offered_rate: float = Field(description="Scheduled jobs / arrival phase.")
    throughput: float = Field(description="Results received / elapsed.")
    peak_backlog: int | None = None
    peak_replicas: int | None = None
    replica_seconds: float | None = Field(
        None, description="Sum of ready replicas over the 1 s samples: the cost in replica-s."
    )
    workers_seen: int = Field(default=0, description="Workers of the function heard from.")
    workers_ready_seen: int = Field(
        default=0, description="Workers of the function that reported ready at least once."
    )
    other_functions_seen: dict[str, int] = Field(
        default_factory=dict,
        description="Workers of other functions heard from during the run, by function.",
    )
    timeline: list[TimelinePoint] = Field(default_factory=list)
    usage: Usage | None = Field(
        default=None,
        description="What the run used, for `surge cost`: replicas over time (sampled "
        "each second), the results' compute, the workers' cold start; None when no "
        "worker's heartbeat was seen (replicas unknown).",
    )
    files: dict[str, str] = Field(default_factory=dict)
