"""The `make bench` record (`reports/bench-<time>.json`): pydantic models.

Each figure is Surge's number over a bare baseline measured in the same run; a figure
that misses its target carries a profile saying where the time goes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

__all__ = [
    "BenchRecord",
    "ColdStart",
    "Compute",
    "Figure",
    "Latency",
    "Memory",
    "MessagePath",
    "MessageRound",
    "Percentiles",
    "TimeProfile",
    "TopFunction",
    "WakePenalty",
]


class Compute(BaseModel):
    """Worker end-to-end img/s through NATS vs raw ONNX Runtime `run()`."""

    raw_img_s: float
    worker_img_s: float
    ratio: float


class MessageRound(BaseModel):
    """One bare loop and one Surge worker draining the same backlog, back to back."""

    bare_jobs_s: float
    worker_jobs_s: float
    ratio: float
    bare_cpu_us_per_job: float | None = None
    worker_cpu_us_per_job: float | None = None
    floor_jobs_s: float | None = None
    floor_cpu_us_per_job: float | None = None


_FLOOR = (
    "A bare nats-py loop with Surge's guarantees: each batch's results stored, their "
    "acknowledgements awaited, then replies, then acks confirmed (loadgen.bench.floor)"
)


class MessagePath(BaseModel):
    """Tiny-model worker jobs/s vs a bare nats-py fetch + publish result + ack loop: the
    round with the median ratio (rounds alternate the loops, so a shared machine's drift
    touches each); and vs the same loop keeping Surge's guarantees (the floor)."""

    jobs: int
    bare_jobs_s: float
    worker_jobs_s: float
    ratio: float
    bare_cpu_us_per_job: float | None = None
    worker_cpu_us_per_job: float | None = None
    cpu_ratio: float | None = Field(
        default=None, description="bare CPU per job / worker CPU per job: noise-robust"
    )
    floor_jobs_s: float | None = Field(default=None, description=_FLOOR)
    floor_cpu_us_per_job: float | None = Field(default=None, description="the floor's")
    floor_ratio: float | None = Field(
        default=None, description="worker jobs/s / floor jobs/s, in the same round"
    )
    rounds: list[MessageRound] = Field(default_factory=list)


class Percentiles(BaseModel):
    p50: float
    p99: float


class WakePenalty(BaseModel):
    """One step's median microseconds back to back and after an idle gap
    (`loadgen.bench.wake`)."""

    gap_ms: float
    back_to_back_us: float
    after_idle_us: float
    ratio: float


class Latency(BaseModel):
    """Tiny-model job round trip vs a bare nats-py request/reply, milliseconds."""

    surge: Percentiles
    bare: Percentiles
    p50_ratio: float
    floor: Percentiles | None = Field(
        default=None,
        description="A bare nats-py job with Surge's guarantees: stored, pulled, its result "
        "stored before the reply, acked (loadgen.bench.floor)",
    )
    floor_p50_ratio: float | None = None
    wake: WakePenalty | None = Field(
        default=None,
        description="How much slower a step of a tiny job runs after an idle gap than back "
        "to back, in the bench's process: one job at a time idles between steps",
    )


class Memory(BaseModel):
    """Worker resident set vs a bare process holding the same session, bytes."""

    worker_rss: int
    bare_rss: int
    ratio: float


class ColdStart(BaseModel):
    """Process start to ready vs bare process start to session + one inference, seconds."""

    worker: float
    worker_seen_by_bench: float
    bare: float
    ratio: float


class Figure(BaseModel):
    """One headline ratio and its target."""

    name: str
    ratio: float
    target: str
    meets: bool


class TopFunction(BaseModel):
    """One row of a cProfile: a function, its calls and time (own and cumulative)."""

    function: str
    calls: int
    tottime_s: float
    cumtime_s: float


class TimeProfile(BaseModel):
    """Where the time of one figure goes."""

    figure: str
    what: str = Field(description="What was profiled, and how.")
    wall_s: float
    phases_ms: dict[str, float] = Field(
        default_factory=dict, description="Measured stages or phases, in milliseconds."
    )
    own_time_by_package: dict[str, float] = Field(
        default_factory=dict, description="Own time (s) per library or Surge module."
    )
    top_own_time: list[TopFunction] = Field(default_factory=list)
    top_cumulative: list[TopFunction] = Field(default_factory=list)
    summary: str = ""


class BenchRecord(BaseModel):
    """Everything one `make bench` measured."""

    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    batch: int
    threads: int
    cpu_count: int | None
    compute: Compute
    message_path: MessagePath
    latency_ms: Latency
    memory: Memory
    cold_start_s: ColdStart
    figures: list[Figure] = Field(default_factory=list)
    profiles: dict[str, TimeProfile] = Field(default_factory=dict)
