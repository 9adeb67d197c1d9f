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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

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
from function.engine.jobmetrics import JobMetrics
from function.telemetry import METRICS, bind, trace_headers
from function.transport.storage import EncodedResult, ResultStore

__all__ = ["SMALL_IMAGE_PIXELS", "Completion", "Settler", "Succeeded"]

log = logging.getLogger("surge.settle")

# A job whose batch ran and whose outputs are made: its result is ready to store.
Succeeded = tuple[InFlightJob, dict[str, Output], Timings]
_tracer = trace.get_tracer("surge")


_ACK_TRIES = 4
_ACK_TIMEOUT_S = 2.5


async def _ack_confirmed(job: InFlightJob) -> None:
    """Ack, and wait for the server to confirm it, trying again (an ack is idempotent):
    an ack lost in a leader change would have the job delivered again and answered a
    second time from its stored result."""
    for attempt in range(_ACK_TRIES):
        try:
            await job.msg.ack_sync(timeout=_ACK_TIMEOUT_S)
            return
        except (NatsTimeoutError, NoRespondersError):
            if attempt == _ACK_TRIES - 1:
                raise
            await asyncio.sleep(0.25 * (attempt + 1))


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
        self.metrics = JobMetrics(settings.function, settings.tenants)

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

    @staticmethod
    def _publish_span(job: InFlightJob) -> Span:
        """A `publish` span under the job's, when spans are recorded; else the job's own
        (nothing exports spans: only the trace id is carried on)."""
        if not job.span.is_recording():
            return job.span
        return _tracer.start_span("publish", context=trace.set_span_in_context(job.span))

    async def _publish(self, job: InFlightJob, result: Result) -> None:
        span = self._publish_span(job)
        headers = trace_headers(trace.set_span_in_context(span))
        try:
            await self._results.publish(result, self._reply_to(job), headers)
        finally:
            if span is not job.span:
                span.end()

    @staticmethod
    def _reply_to(job: InFlightJob) -> str | None:
        """Where a job is answered: its parsed reply subject, or for a job that did not
        parse, its reply header when that is a safe subject."""
        if job.request is not None:
            return job.request.reply_to
        return safe_reply_to(job.msg.headers, job.tenant)

    def _done(self, job: InFlightJob, status: str, code: str = "") -> None:
        job.settled = True
        self.metrics.finished(job.tenant, status, code)
        latency = (wall_ns() - job.published_ns) / 1e9
        self.metrics.latency.observe(max(latency, 0.0))
        job.span.set_attribute("surge.status", status)
        if code:
            job.span.set_status(StatusCode.ERROR, code)
        job.span.end()
        self._on_settled(job)

    async def succeed_all(self, done: Sequence[Succeeded]) -> list[tuple[InFlightJob, Exception]]:
        """Store the ok results of a batch (their acknowledgements awaited together),
        then send each and ack its job. Returns the jobs left unsettled, with why."""
        failed: list[tuple[InFlightJob, Exception]] = []
        stored: list[tuple[InFlightJob, Span, EncodedResult]] = []
        for job, outputs, timings in done:
            if job.settled:  # handed back meanwhile (the drain's timeout)
                continue
            span = self._publish_span(job)
            try:
                result = self._result(job, timings, status=JobStatus.OK, outputs=outputs)
                headers = trace_headers(trace.set_span_in_context(span))
                stored.append((job, span, await self._results.encode(result, headers)))
            except Exception as exc:  # outputs that do not validate, a blob store refusal
                if span is not job.span:
                    span.end()
                failed.append((job, exc))
        outcomes = await self._results.store_all([encoded for _, _, encoded in stored])
        replied: list[InFlightJob] = []
        for (job, span, encoded), outcome in zip(stored, outcomes, strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                await self._results.reply(self._reply_to(job), encoded)
            except Exception as exc:
                failed.append((job, exc))
                continue
            finally:
                if span is not job.span:
                    span.end()
            replied.append(job)
            self._done(job, "ok")  # stored and answered: what happens to the ack is JetStream's
        acks = await asyncio.gather(*map(_ack_confirmed, replied), return_exceptions=True)
        for job, ack in zip(replied, acks, strict=True):
            if isinstance(ack, Exception):  # JetStream delivers it again; the stored result
                with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
                    log.warning("ack not confirmed (%r): it will be answered from the store", ack)
            elif isinstance(ack, BaseException):
                raise ack
        return failed

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
        await _ack_confirmed(job)
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
        made: list[asyncio.Future[dict[str, Output]]] = []
        timings: list[Timings] = []
        for index, job in enumerate(batch):
            self._spans(job, size, start_ns, end_ns)
            metrics.compute(job.tenant, infer_ms / 1000 / size)  # its part of the model time
            queued_ms = (start_ns - job.published_ns) / 1e6
            metrics.queue_wait.observe(max(queued_ms, 0.0) / 1000)
            timings.append(Timings(queued_ms=queued_ms, batch_size=size, inference_ms=infer_ms))
            made.append(self._postprocess(job, out[index]))
        # Postprocessing runs across the CPU pool; the results are stored together.
        outcomes = await _outcomes(made)
        succeeded: list[Succeeded] = []
        for job, timing, outcome in zip(batch, timings, outcomes, strict=True):
            job.image = None  # the decoded pixels go now; the budget gets them back at settle
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

    def _postprocess(self, job: InFlightJob, row: np.ndarray) -> asyncio.Future[dict[str, Output]]:
        """Postprocess one row: here for a small image under a fast model (cheaper than a
        thread hop), else in the CPU pool."""
        image = job.image
        assert image is not None
        loop = asyncio.get_running_loop()
        if not (self._model.fast and image.width * image.height <= SMALL_IMAGE_PIXELS):
            return loop.run_in_executor(
                self._cpu_pool, self._model.postprocess, row, image, job.outputs
            )
        made: asyncio.Future[dict[str, Output]] = loop.create_future()
        try:
            made.set_result(self._model.postprocess(row, image, job.outputs))
        except Exception as exc:
            made.set_exception(exc)
        return made

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
                out = await run_in(infer_pool, False, self._model.run_batch, [job.ready_sample])
            except Exception as exc:
                await self.guarded(job, exc)
                continue
            await self.complete([job], out, start_ns, wall_ns())
