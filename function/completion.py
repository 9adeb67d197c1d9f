"""After inference: postprocess each job of a batch and settle it, one job at a time.

Every job is settled on its own, so one failing job (or one failing settle) never
leaves the rest of its batch without an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from opentelemetry import trace

from function.batchmodel import BatchModel, run_in
from function.errors import JobError
from function.inflight import InFlightJob, wall_ns
from function.jobs import Timings
from function.settle import Settler
from function.telemetry import METRICS, bind

__all__ = ["SMALL_IMAGE_PIXELS", "Completion"]

log = logging.getLogger("surge.completion")
_tracer = trace.get_tracer("surge")

SMALL_IMAGE_PIXELS = 64 * 64 * 16  # postprocessing smaller images is cheaper than a thread hop


class Completion:
    """Postprocesses and settles batches for one consumer."""

    def __init__(
        self, model: BatchModel, settler: Settler, function: str, cpu_pool: ThreadPoolExecutor
    ) -> None:
        self._model = model
        self._settler = settler
        self._function = function
        self._cpu_pool = cpu_pool
        self.completed = 0
        self.first_job_at: float | None = None
        self.batch_sizes: deque[int] = deque(maxlen=256)

    async def guarded(self, job: InFlightJob, error: Exception) -> None:
        """Retry or dead-letter `job`; if even that fails, abandon it to JetStream."""
        try:
            await self._settler.retry_or_dead_letter(job, error)
        except Exception:
            log.exception("could not settle a failed job; JetStream will redeliver it")
            await self._settler.abandon(job)

    async def fail(self, job: InFlightJob, error: JobError, timings: Timings | None = None) -> None:
        try:
            await self._settler.fail(job, error, timings)
        except Exception as exc:
            log.exception("could not store an error result")
            await self.guarded(job, exc)

    def _spans(self, job: InFlightJob, size: int, start_ns: int, end_ns: int) -> None:
        parent = trace.set_span_in_context(job.span)
        _tracer.start_span("batch wait", context=parent, start_time=job.fetched_ns).end(start_ns)
        infer = _tracer.start_span("inference", context=parent, start_time=start_ns)
        infer.set_attribute("surge.batch_size", size)
        infer.end(end_ns)

    async def complete(
        self, batch: list[InFlightJob], out: np.ndarray, start_ns: int, end_ns: int
    ) -> None:
        """Postprocess row i for job i, store and send its result, ack."""
        size = len(batch)
        if len(out) != size:
            error = RuntimeError(f"model returned {len(out)} rows for a batch of {size}")
            for job in batch:
                await self.guarded(job, error)
            return
        infer_ms = (end_ns - start_ns) / 1e6
        METRICS.batch_size.labels(self._function).observe(size)
        METRICS.inference.labels(self._function).observe(infer_ms / 1000)
        self.batch_sizes.append(size)
        settling = []
        for index, job in enumerate(batch):
            self._spans(job, size, start_ns, end_ns)
            queued_ms = (start_ns - job.published_ns) / 1e6
            METRICS.queue_wait.labels(self._function).observe(max(queued_ms, 0.0) / 1000)
            timings = Timings(queued_ms=queued_ms, batch_size=size, inference_ms=infer_ms)
            settling.append(self._complete_one(job, out[index], timings))
        # The jobs of a batch settle concurrently: their result stores overlap on the wire.
        await asyncio.gather(*settling)

    async def _complete_one(self, job: InFlightJob, row: np.ndarray, timings: Timings) -> None:
        with bind(job_id=job.job_id, trace_id=job.trace_id):
            await self._complete_guarded(job, row, timings)

    async def _complete_guarded(self, job: InFlightJob, row: np.ndarray, timings: Timings) -> None:
        assert job.image is not None
        small = self._model.fast and job.image.width * job.image.height <= SMALL_IMAGE_PIXELS
        try:
            outputs = await run_in(
                self._cpu_pool, small, self._model.postprocess, row, job.image, job.outputs
            )
            job.image = None  # the decoded pixels go now; the budget gets them back at settle
            await self._settler.succeed(job, outputs, timings)
        except JobError as exc:
            await self.fail(job, exc, timings)
            return
        except Exception as exc:
            log.exception("completing job failed")
            if not job.settled:
                await self.guarded(job, exc)
            return
        self.completed += 1
        self.first_job_at = self.first_job_at or time.time()

    async def split_after_failure(
        self, batch: list[InFlightJob], error: Exception, infer_pool: ThreadPoolExecutor
    ) -> None:
        """A failed batch is retried one job at a time; a failing job alone is transient."""
        if len(batch) == 1:
            await self.guarded(batch[0], error)
            return
        log.warning("batch of %d failed (%s); retrying one by one", len(batch), error)
        for job in batch:
            start_ns = wall_ns()
            try:
                out = await run_in(infer_pool, False, self._model.run_batch, [job.ready_sample])
            except Exception as exc:
                await self.guarded(job, exc)
                continue
            await self.complete([job], out, start_ns, wall_ns())
