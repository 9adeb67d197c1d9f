"""`InFlightJob`: one JetStream message from fetch to ack, with its timings and span."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from nats.aio.msg import Msg
from opentelemetry.trace import Span
from PIL import Image

from function.jobs import JobRequest, as_utc, job_id_for
from function.settings import Priority
from function.telemetry import trace_id_of

__all__ = ["InFlightJob", "wall_ns"]


def wall_ns() -> int:
    return time.time_ns()


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

    @property
    def ready_sample(self) -> np.ndarray:
        """The model input of a prepared job (every batched job has one)."""
        if self.sample is None:
            raise RuntimeError(f"job {self.job_id} was batched before it was prepared")
        return self.sample

    @property
    def attempts(self) -> int:
        return int(self.msg.metadata.num_delivered or 1)

    @property
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
        return job_id_for(self.msg.headers, meta.stream or "", int(meta.sequence.stream or 0))

    @property
    def trace_id(self) -> str | None:
        return trace_id_of(self.span)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})
