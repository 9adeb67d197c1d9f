"""Worker heartbeats on the wire: the state each worker publishes on `surge.heartbeat.<function>`.

The scaler uses them for per-replica throughput and cold-start times; the load
generator for replica timelines. Core NATS (not stored): a missing beat means gone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Heartbeat", "WorkerState"]


class WorkerState(StrEnum):
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class Heartbeat(BaseModel):
    """One worker's state at one moment."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    function: str
    state: WorkerState
    started_at: datetime
    ready_at: datetime | None = None
    cold_start_s: float | None = Field(default=None, description="Process start to ready.")
    cold_start_phases: dict[str, float] = Field(
        default_factory=dict, description="Seconds per cold-start phase (import ... total)."
    )
    jobs_completed: int = 0
    jobs_per_s: float = 0.0
    mean_batch_size: float = 0.0
    in_flight: int = 0
    runners: int = Field(default=0, description="Inference runs at once on the shared session.")
    intra_op_threads: int = Field(default=0, description="Threads per inference run.")
    max_batch: int = Field(default=0, description="The batch size chosen (or set).")
    cpu_processes: int = Field(
        default=0, description="Processes running decode and encode (0: the worker's threads)."
    )
    model_versions: list[str] = Field(
        default_factory=list, description="Model versions serving: the stable one, a canary."
    )
    interval_s: float = 1.0
    sent_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
