"""After inference: `Completion` postprocesses each job of a batch and has the `Settler`
end it; one failing job (or one failing settle) never leaves the rest of its batch
without an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
from opentelemetry import trace
from PIL import Image

from function.contract.errors import ErrorCode, JobError, TransientError
from function.contract.settings import WorkerSettings
from function.contract.wire import Output, Timings
from function.engine.batchmodel import BatchModel, run_in
from function.engine.cpuprocs import CpuProcesses
from function.engine.inflight import InFlightJob, wall_ns
from function.engine.settle import Settler, Succeeded
from function.telemetry import bind

__all__ = ["SMALL_IMAGE_PIXELS", "Completion"]

_tracer = trace.get_tracer("surge")
log = logging.getLogger("surge.completion")
T = TypeVar("T")


async def _outcomes(futures: list[asyncio.Future[T]]) -> list[T | BaseException]:
    """Each future's result or exception, once all are done (without a loop turn when
    they already are, as postprocessing done inline is)."""
    if not all(future.done() for future in futures):
        await asyncio.wait(futures)
    return [
        asyncio.CancelledError() if f.cancelled() else f.exception() or f.result() for f in futures
    ]


SMALL_IMAGE_PIXELS = 64 * 64 * 16  # postprocessing smaller images is cheaper than a thread hop


class Completion:
    """Postprocesses and settles batches for one consumer."""

    processes: CpuProcesses | None = None  # where jobs prepared there are postprocessed

    def __init__(
        self,
        model: BatchModel,
        settler: Settler,
        settings: WorkerSettings,
        cpu_pool: ThreadPoolExecutor,
    ) -> None:
        self._model = model
        self._settler = settler
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
        if not job.span.is_recording():
            return
        parent = trace.set_span_in_context(job.span)
        _tracer.start_span("batch wait", context=parent, start_time=job.fetched_ns).end(start_ns)
        infer = _tracer.start_span("inference", context=parent, start_time=start_ns)
        infer.set_attribute("surge.batch_size", size)
        infer.end(end_ns)

    async def complete(
        self, batch: list[InFlightJob], out: np.ndarray, start_ns: int, end_ns: int
    ) -> None:
        """Postprocess row i for job i, store and send its result, ack; whatever goes
        wrong, every job of the batch still ends (retried when nothing else settled it)."""
        try:
            await self._complete(batch, out, start_ns, end_ns)
        except Exception as exc:
            log.exception("completing a batch failed")
            for job in batch:
                if not job.settled:
                    await self.guarded(job, exc)

    async def _complete(
        self, batch: list[InFlightJob], out: np.ndarray, start_ns: int, end_ns: int
    ) -> None:
        size = len(batch)
        if len(out) != size:
            error = RuntimeError(f"model returned {len(out)} rows for a batch of {size}")
            for job in batch:
                await self.guarded(job, error)
            return
        infer_ms = (end_ns - start_ns) / 1e6
        metrics = self._settler.metrics
        metrics.batch_size.observe(size)
        metrics.inference.observe(infer_ms / 1000)
        self.batch_sizes.append(size)
        made: list[asyncio.Future[tuple[dict[str, Output], int]]] = []
        timings: list[Timings] = []
        for index, job in enumerate(batch):
            self._spans(job, size, start_ns, end_ns)
            metrics.compute(job.tenant, infer_ms / 1000 / size)  # its part of the model time
            queued_ms = (start_ns - job.published_ns) / 1e6
            metrics.queue_wait.observe(max(queued_ms, 0.0) / 1000)
            share_ms = infer_ms / size + job.prep_ns / 1e6  # postprocessing is added below
            timings.append(
                Timings(
                    queued_ms=queued_ms,
                    batch_size=size,
                    inference_ms=infer_ms,
                    compute_ms=share_ms,
                )
            )
            made.append(self._postprocess(job, out[index]))
        # Postprocessing runs across the CPU pool; the results are stored together.
        outcomes = await _outcomes(made)
        succeeded: list[Succeeded] = []
        now = datetime.now(UTC)
        for job, timing, timed in zip(batch, timings, outcomes, strict=True):
            job.image = None  # the decoded pixels go now; the budget gets them back at settle
            outcome: dict[str, Output] | BaseException
            if isinstance(timed, tuple):
                outcome, post_ns = timed
                timing.compute_ms += post_ns / 1e6
            else:
                outcome = timed
            deadline = job.request.deadline if job.request is not None else None
            if deadline is not None and deadline < now and not isinstance(outcome, JobError):
                outcome = JobError(  # late: its output is dropped, the client told why
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"deadline {deadline.isoformat()} passed while it ran",
                )
            if isinstance(outcome, BaseException):
                await self._not_completed(job, outcome, timing)
            else:
                succeeded.append((job, outcome, timing))
        failed = await self._settler.succeed_all(succeeded)
        for job, problem in failed:
            await self._not_completed(job, problem, None)
        if len(failed) < len(succeeded):
            self.completed += len(succeeded) - len(failed)
            self.first_job_at = self.first_job_at or time.time()

    def _postprocess_timed(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> tuple[dict[str, Output], int]:
        """The model's postprocessing of one row, and the nanoseconds it took."""
        started = time.perf_counter_ns()
        made = self._model.postprocess(row, image, outputs)
        return made, time.perf_counter_ns() - started

    def _postprocess(
        self, job: InFlightJob, row: np.ndarray
    ) -> asyncio.Future[tuple[dict[str, Output], int]]:
        """Postprocess one row (and time it): in the CPU process that prepared the job,
        here for a small image under a fast model (cheaper than a thread hop), else in
        the CPU pool."""
        loop = asyncio.get_running_loop()
        if job.shared is not None:
            return loop.create_task(self._postprocess_shared(job, row))
        image = job.image
        assert image is not None
        if not (self._model.fast and image.width * image.height <= SMALL_IMAGE_PIXELS):
            return loop.run_in_executor(
                self._cpu_pool, self._postprocess_timed, row, image, job.outputs
            )
        made: asyncio.Future[tuple[dict[str, Output], int]] = loop.create_future()
        try:
            made.set_result(self._postprocess_timed(row, image, job.outputs))
        except Exception as exc:
            made.set_exception(exc)
        return made

    async def _postprocess_shared(
        self, job: InFlightJob, row: np.ndarray
    ) -> tuple[dict[str, Output], int]:
        """In the CPU process that prepared the job; here when its slot has no room."""
        assert self.processes is not None and job.shared is not None
        made = await self.processes.postprocess(job.shared, row, job.outputs)
        if made is not None:
            return made
        processes, shared = self.processes, job.shared
        if shared is None:  # handed back while it waited: nothing left to postprocess
            raise TransientError("the job was handed back")

        def here() -> tuple[dict[str, Output], int]:  # off the loop: the image may be large
            return self._postprocess_timed(row, processes.image(shared), job.outputs)

        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, here)

    async def _not_completed(
        self, job: InFlightJob, error: BaseException, timings: Timings | None
    ) -> None:
        """A job of a batch that could not be completed: bad input fails it; anything
        else is retried or dead-lettered."""
        if isinstance(error, JobError):
            await self.fail(job, error, timings)
            return
        if not isinstance(error, Exception):
            return  # cancelled: the worker is stopping, and its drain hands the job back
        with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
            log.error("completing job failed: %r", error, exc_info=error)
        if not job.settled:
            await self.guarded(job, error)

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
                model = job.model or self._model  # the version it was batched for
                out = await run_in(infer_pool, False, model.run_batch, [job.ready_sample])
            except Exception as exc:
                await self.guarded(job, exc)
                continue
            await self.complete([job], out, start_ns, wall_ns())
