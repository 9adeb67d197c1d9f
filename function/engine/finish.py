"""How a job ends, in one place: `Settler` (result stored, then ack; error result, then
term; nak; dead letter; hand back) and `Completion` (after inference: postprocess each job
of a batch and settle it on its own).

Every in-flight job ends through exactly one `Settler` method, so a job is never acked
before its result is stored and never left without an outcome; one failing job (or one
failing settle) never leaves the rest of its batch without one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from function.contract.bounds import safe_reply_to
from function.contract.errors import ErrorCode, JobError
from function.contract.settings import WorkerSettings
from function.contract.wire import (
    DeadLetter,
    ErrorInfo,
    JobStatus,
    ModelInfo,
    Output,
    Result,
    Timings,
)
from function.engine.batchmodel import BatchModel, run_in
from function.engine.job import InFlightJob, wall_ns
from function.telemetry import METRICS, bind, tenant_label, trace_headers
from function.transport.storage import ResultStore

__all__ = ["SMALL_IMAGE_PIXELS", "Completion", "Settler"]

log = logging.getLogger("surge.settle")


class Settler:
    """Ends jobs for one worker; `on_settled` is called once per job."""

    def __init__(
        self,
        results: ResultStore,
        settings: WorkerSettings,
        model: ModelInfo,
        on_settled: Callable[[InFlightJob], None],
    ) -> None:
        self._results = results
        self._settings = settings
        self._model = model
        self._on_settled = on_settled
        self._function = settings.function

    def _result(self, job: InFlightJob, timings: Timings, **fields: object) -> Result:
        timings.total_ms = (wall_ns() - job.published_ns) / 1e6
        return Result.model_validate(
            {
                "job_id": job.job_id,
                "function": self._function,
                "tenant": job.tenant,
                "model": self._model,
                "timings": timings,
                "trace_id": job.trace_id,
                "attempts": job.attempts,
                **fields,
            }
        )

    async def _publish(self, job: InFlightJob, result: Result) -> None:
        reply_to = self._reply_to(job)
        publish_span = trace.get_tracer("surge").start_span(
            "publish", context=trace.set_span_in_context(job.span)
        )
        with trace.use_span(publish_span, end_on_exit=True):
            await self._results.publish(result, reply_to, trace_headers())

    @staticmethod
    def _reply_to(job: InFlightJob) -> str | None:
        """Where a job is answered: its parsed reply subject, or for a job that did not
        parse, its reply header when that is a safe subject."""
        if job.request is not None:
            return job.request.reply_to
        return safe_reply_to(job.msg.headers, job.tenant)

    def _done(self, job: InFlightJob, status: str, code: str = "") -> None:
        job.settled = True
        METRICS.jobs.labels(self._function, status, code).inc()
        tenant = tenant_label(job.tenant, self._settings.tenants)
        METRICS.tenant_jobs.labels(self._function, tenant, status).inc()
        latency = (wall_ns() - job.published_ns) / 1e9
        METRICS.latency.labels(self._function).observe(max(latency, 0.0))
        job.span.set_attribute("surge.status", status)
        if code:
            job.span.set_status(StatusCode.ERROR, code)
        job.span.end()
        self._on_settled(job)

    async def succeed(self, job: InFlightJob, outputs: dict[str, Output], timings: Timings) -> None:
        """Store and send the ok result, then ack."""
        result = self._result(job, timings, status=JobStatus.OK, outputs=outputs)
        await self._publish(job, result)
        await job.msg.ack()
        self._done(job, "ok")

    async def fail(self, job: InFlightJob, error: JobError, timings: Timings | None = None) -> None:
        """Store and send an error result, then terminate: never retried."""
        info = ErrorInfo(code=error.code, message=error.message)
        result = self._result(job, timings or Timings(), status=JobStatus.ERROR, error=info)
        with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
            log.info("job failed: %s: %s", error.code.value, error.message)
        await self._publish(job, result)
        await job.msg.term()
        self._done(job, "error", error.code.value)

    async def replay(self, job: InFlightJob, stored: Result) -> None:
        """A redelivered job whose result is already stored: send it again, ack."""
        await self._results.resend(stored, self._reply_to(job))
        await job.msg.ack()
        self._done(job, stored.status.value, stored.error.code.value if stored.error else "")

    async def retry_or_dead_letter(self, job: InFlightJob, error: Exception) -> None:
        """A transient failure: nak with backoff, or dead-letter after `max_deliver`."""
        message = f"{type(error).__name__}: {error}"
        if job.attempts < self._settings.max_deliver:
            delay = self._settings.nak_delay_s * 2 ** (job.attempts - 1)
            with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
                log.warning(
                    "attempt %d failed, retrying in %.1fs: %s", job.attempts, delay, message
                )
            await job.msg.nak(delay=delay)
            self._release(job, "retry", error=True)
            return
        await self.dead_letter(job, message)

    async def dead_letter(self, job: InFlightJob, message: str) -> None:
        """Keep the job and its last error on the dead stream; answer it with an error."""
        letter = DeadLetter(
            job_id=job.job_id,
            function=self._function,
            tenant=job.tenant,
            original_subject=job.msg.subject,
            attempts=job.attempts,
            last_error=ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message=message),
            stream_sequence=job.msg.metadata.sequence.stream,
            headers=job.headers,
            payload_b64=base64.b64encode(job.msg.data).decode(),
            payload_bytes=len(job.msg.data),
        )
        await self._results.dead_letter(letter)
        METRICS.dead_letters.labels(self._function).inc()
        error = JobError(
            ErrorCode.MAX_DELIVER_EXCEEDED,
            f"gave up after {job.attempts} attempts; last error: {message}",
        )
        await self.fail(job, error)

    async def abandon(self, job: InFlightJob) -> None:
        """Give a job up to JetStream (nak with delay, best effort): it is redelivered."""
        with contextlib.suppress(Exception):
            await job.msg.nak(delay=self._settings.nak_delay_s)
        if not job.settled:
            self._release(job, "abandoned", error=True)

    async def hand_back(self, job: InFlightJob) -> None:
        """Return an unstarted job to the stream at once (drain): another replica takes it.

        Best effort: if the nak cannot be sent, JetStream redelivers after `ack_wait`.
        """
        with contextlib.suppress(Exception):
            await job.msg.nak()
        self._release(job, "handed_back", error=False)

    def _release(self, job: InFlightJob, status: str, *, error: bool) -> None:
        """Let go of a job without a final result (JetStream delivers it again)."""
        job.settled = True
        job.span.set_attribute("surge.status", status)
        if error:
            job.span.set_status(StatusCode.ERROR, status)
        job.span.end()
        self._on_settled(job)


log = logging.getLogger("surge.completion")
_tracer = trace.get_tracer("surge")

SMALL_IMAGE_PIXELS = 64 * 64 * 16  # postprocessing smaller images is cheaper than a thread hop


class Completion:
    """Postprocesses and settles batches for one consumer."""

    def __init__(
        self,
        model: BatchModel,
        settler: Settler,
        settings: WorkerSettings,
        cpu_pool: ThreadPoolExecutor,
    ) -> None:
        self._model = model
        self._settler = settler
        self._function = settings.function
        self._tenants = settings.tenants
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
            share = infer_ms / 1000 / size  # this job's part of the batch's model time
            tenant = tenant_label(job.tenant, self._tenants)
            METRICS.tenant_compute.labels(self._function, tenant).inc(share)
            queued_ms = (start_ns - job.published_ns) / 1e6
            METRICS.queue_wait.labels(self._function).observe(max(queued_ms, 0.0) / 1000)
            timings = Timings(queued_ms=queued_ms, batch_size=size, inference_ms=infer_ms)
            settling.append(self._complete_one(job, out[index], timings))
        # The jobs of a batch settle concurrently: their result stores overlap on the wire.
        await asyncio.gather(*settling)

    async def _complete_one(self, job: InFlightJob, row: np.ndarray, timings: Timings) -> None:
        with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
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
