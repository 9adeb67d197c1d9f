"""How a job ends: result stored then ack; error result then term; nak; dead letter.

Every in-flight job ends through exactly one `Settler` method, so a job is never acked
before its result is stored and never left without an outcome.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from function.bounds import safe_reply_to
from function.errors import ErrorCode, JobError
from function.inflight import InFlightJob, wall_ns
from function.jobs import DeadLetter, ErrorInfo, JobStatus, ModelInfo, Output, Result, Timings
from function.results import ResultStore
from function.settings import WorkerSettings
from function.telemetry import METRICS, bind, trace_headers

__all__ = ["Settler"]

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
        return job.request.reply_to if job.request else safe_reply_to(job.msg.headers)

    def _done(self, job: InFlightJob, status: str, code: str = "") -> None:
        job.settled = True
        METRICS.jobs.labels(self._function, status, code).inc()
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
        with bind(job_id=job.job_id, trace_id=job.trace_id):
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
            with bind(job_id=job.job_id, trace_id=job.trace_id):
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
