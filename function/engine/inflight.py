"""`InFlightJob`: a message taken from NATS and not yet settled, with its timings, span
and what admission made of it; and the small facts about jobs every stage asks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
from nats.aio.msg import Msg
from opentelemetry.trace import Span
from PIL import Image

from function.contract.errors import ErrorCode, JobError
from function.contract.parse import job_id_for, tenant_of
from function.contract.settings import Priority
from function.contract.wire import JobRequest, as_utc
from function.engine.batchmodel import BatchModel
from function.engine.cpuprocs import SharedJob
from function.telemetry import trace_id_of

__all__ = ["InFlightJob", "split_expired", "stream_position", "wall_ns"]


def wall_ns() -> int:
    return time.time_ns()


def split_expired(
    batch: list[InFlightJob], now: datetime
) -> tuple[list[InFlightJob], list[tuple[InFlightJob, JobError]]]:
    """The jobs whose deadline has not passed, and those whose has, each with its error."""
    live, late = [], []
    for job in batch:
        deadline = job.request.deadline if job.request else None
        if deadline is None or deadline >= now:
            live.append(job)
            continue
        why = f"deadline {deadline.isoformat()} passed"
        late.append((job, JobError(ErrorCode.DEADLINE_EXCEEDED, why)))
    return live, late


def stream_position(msg: Msg) -> tuple[str, int]:
    """(stream, sequence): a job's identity on the server, across the jobs streams."""
    meta = msg.metadata
    return meta.stream or "", int(meta.sequence.stream or 0)


@dataclass(eq=False)
class InFlightJob:
    """A message taken from NATS and not yet acked, nacked or terminated."""

    msg: Msg
    priority: Priority
    span: Span
    context: Any
    fetched_ns: int = field(default_factory=wall_ns)
    request: JobRequest | None = None
    image: Image.Image | None = None
    sample: np.ndarray | None = None
    outputs: tuple[str, ...] = ()
    pixels: int = 0  # decoded pixels this job holds in the worker's PixelBudget
    running_since: int | None = None
    settled: bool = False
    source: str = ""  # the tenant whose stream it came from ("" for the open stream)
    cancelled: bool = False  # asked to stop (`JobControl`): its output is never sent
    prep_ns: int = 0  # measured decode and preprocess time
    cache_key: str | None = None  # its result cache key, when the worker caches
    model: BatchModel | None = None  # the model version it runs on, once batched
    input_sha256: str | None = None  # a screen job's: the digest of the input it scores
    shared: SharedJob | None = None  # prepared in a CPU process: its image stays there

    @property
    def ready_sample(self) -> np.ndarray:
        """The model input of a prepared job (every batched job has one)."""
        if self.sample is None:
            raise RuntimeError(f"job {self.job_id} was batched before it was prepared")
        return self.sample

    @property
    def attempts(self) -> int:
        return int(self.msg.metadata.num_delivered or 1)

    @cached_property
    def published_ns(self) -> int:
        """When the job entered the stream (falls back to when it was fetched)."""
        stamp = self.msg.metadata.timestamp
        if isinstance(stamp, datetime):
            return int(as_utc(stamp).timestamp() * 1e9)
        return self.fetched_ns

    @property
    def job_id(self) -> str:
        return self.request.job_id if self.request else self.fallback_id

    @property
    def fallback_id(self) -> str:
        meta = self.msg.metadata
        sequence = int(meta.sequence.stream or 0)
        return job_id_for(self.msg.headers, meta.stream or "", sequence, self.tenant)

    @property
    def tenant(self) -> str | None:
        """The tenant the job's subject names (the server vouches for it), or None."""
        return self.request.tenant if self.request else tenant_of(self.msg.subject)

    @cached_property
    def trace_id(self) -> str | None:
        return trace_id_of(self.span)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})
