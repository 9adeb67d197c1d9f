"""How a job ends, in one place: `Settler` stores results then acks (confirmed), or
stores an error result then terminates, naks, dead-letters or hands back.

Every in-flight job ends through exactly one `Settler` method, so a job is never acked
before its result is stored and never left without an outcome.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from function.contract.bounds import safe_reply_to
from function.contract.errors import ErrorCode, JobError
from function.contract.lifecycle import JobState
from function.contract.settings import Header, WorkerSettings
from function.contract.wire import (
    DeadLetter,
    ErrorInfo,
    JobStatus,
    ModelInfo,
    Output,
    Result,
    Timings,
)
from function.engine.inflight import InFlightJob, wall_ns
from function.engine.jobmetrics import JobMetrics
from function.telemetry import METRICS, bind, trace_headers
from function.transport.acks import DuplicateWrite
from function.transport.cache import ResultCache
from function.transport.events import JobEvents
from function.transport.storage import EncodedResult, ResultStore
from function.transport.webhooks import WebhookSender

__all__ = ["Settler", "Succeeded"]

log = logging.getLogger("surge.settle")

# A job whose batch ran and whose outputs are made: its result is ready to store.
Succeeded = tuple[InFlightJob, dict[str, Output], Timings]
_tracer = trace.get_tracer("surge")


# (status, error code) -> the state a job's event says; "cancelled" and "superseded" are
# left to whoever stored the final result (a canceller publishes its own event)
_FINAL_STATES: dict[str, dict[str, JobState]] = {
    "ok": {"": JobState.DONE},
    "error": {
        "": JobState.FAILED,
        ErrorCode.DEADLINE_EXCEEDED.value: JobState.EXPIRED,
        ErrorCode.CANCELLED.value: JobState.CANCELLED,
    },
}

_ACK_TRIES = 4  # at least, however fast they fail
_ACK_PATIENCE_S = 20.0  # and for this long: a leader change can pause the stream ~10 s
_ACK_TIMEOUT_S = 2.5


async def _acks_confirmed(
    results: ResultStore, jobs: Sequence[InFlightJob]
) -> list[BaseException | None]:
    """Ack every job, awaiting the server's confirmations together, and send again those
    not confirmed (an ack is idempotent): an ack lost in a leader change would have the
    job delivered again and answered a second time from its stored result. None for
    each confirmed, else the last error."""
    outcomes: dict[int, BaseException | None] = {}
    waiting = list(range(len(jobs)))
    deadline = time.monotonic() + _ACK_PATIENCE_S
    attempt = 0
    while True:
        answers = await results.ack_all([jobs[i].msg for i in waiting], _ACK_TIMEOUT_S)
        outcomes.update(zip(waiting, answers, strict=True))
        waiting = [i for i, answer in zip(waiting, answers, strict=True) if answer is not None]
        attempt += 1
        if not waiting or (attempt >= _ACK_TRIES and time.monotonic() >= deadline):
            break
        await asyncio.sleep(min(0.25 * attempt, 1.0))  # an ack that cannot be sent fails fast
    return [outcomes[i] for i in range(len(jobs))]


class Settler:
    """Ends jobs for one worker; `on_settled` is called once per job."""

    def __init__(
        self,
        results: ResultStore,
        settings: WorkerSettings,
        model: ModelInfo,
        on_settled: Callable[[InFlightJob], None],
        events: JobEvents | None = None,
        webhooks: WebhookSender | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self._events = events
        self._cache = cache
        self._webhooks = webhooks
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
                "input_sha256": job.input_sha256,
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
            encoded = await self._results.publish(result, self._reply_to(job), headers)
        finally:
            if span is not job.span:
                span.end()
        await self._hold_webhooks([(job, encoded)])

    async def _hold_webhooks(self, stored: list[tuple[InFlightJob, EncodedResult]]) -> None:
        """Owe each job's webhook (in the outbox, before its job is acked), if it asked
        for one, and queue its delivery."""
        if self._webhooks is None:
            return
        owed = [
            (job.job_id, job.tenant, job.request.webhook, encoded.body)
            for job, encoded in stored
            if job.request is not None and job.request.webhook is not None
        ]
        await self._webhooks.hold(owed)

    @staticmethod
    def _reply_to(job: InFlightJob) -> str | None:
        """Where a job is answered: its parsed reply subject, or for a job that did not
        parse, its reply header when that is a safe subject."""
        if job.request is not None:
            return job.request.reply_to
        return safe_reply_to(job.msg.headers, job.tenant)

    def _done(self, job: InFlightJob, status: str, code: str = "") -> None:
        if self._events is not None and status in _FINAL_STATES:
            state = _FINAL_STATES[status].get(code, _FINAL_STATES[status][""])
            self._events.emit(job.job_id, job.tenant, state, code)
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
        ended: list[InFlightJob] = []  # final results from elsewhere: acked, never sent
        for job, outputs, timings in done:
            if job.settled:  # handed back meanwhile (the drain's timeout)
                continue
            if job.cancelled:  # its canceller stored and sent the `cancelled` result
                ended.append(job)
                self._done(job, "cancelled", ErrorCode.CANCELLED.value)
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
        answered: list[tuple[InFlightJob, EncodedResult]] = []
        for (job, span, encoded), outcome in zip(stored, outcomes, strict=True):
            try:
                if isinstance(outcome, DuplicateWrite):  # final already (a cancel, say):
                    ended.append(job)  # whoever stored it answered; this output is dropped
                    self._done(job, "superseded")
                    continue
                if isinstance(outcome, Exception):
                    raise outcome
                await self._results.reply(self._reply_to(job), encoded)
                answered.append((job, encoded))
            except Exception as exc:
                failed.append((job, exc))
                continue
            finally:
                if span is not job.span:
                    span.end()
            replied.append(job)
            self._done(job, "ok")  # stored and answered: what happens to the ack is JetStream's
            self._remember(job, encoded)
        replied += ended
        await self._hold_webhooks(answered)
        acks = await _acks_confirmed(self._results, replied)
        for job, ack in zip(replied, acks, strict=True):
            if ack is not None:  # JetStream delivers it again; the stored result answers it
                with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
                    log.warning("ack not confirmed (%r): it will be answered from the store", ack)
        return failed

    def _remember(self, job: InFlightJob, encoded: EncodedResult) -> None:
        """Point the job's cache key at its stored result, if it was computed and ok."""
        if self._cache is None or job.cache_key is None:
            return
        if encoded.headers.get(Header.STATUS) == JobStatus.OK.value:
            self._cache.remember(job.cache_key, job.job_id, job.tenant)

    async def answer_cached(self, job: InFlightJob, stored: Result) -> None:
        """Answer `job` with the outputs of `stored` (the same input, done before): stored
        on its own subject, sent and acked like a computed result. Raises why not."""
        job.cache_key = None  # its entry stands as it is: the age counts from the work
        timings = Timings(cache_hit=True)
        failed = await self.succeed_all([(job, dict(stored.outputs), timings)])
        if failed:
            raise failed[0][1]

    async def fail(self, job: InFlightJob, error: JobError, timings: Timings | None = None) -> None:
        """Store and send an error result, then terminate: never retried."""
        if job.cancelled:
            await self.cancelled(job)
            return
        info = ErrorInfo(code=error.code, message=error.message)
        result = self._result(job, timings or Timings(), status=JobStatus.ERROR, error=info)
        with bind(job_id=job.job_id, trace_id=job.trace_id, tenant=job.tenant):
            log.info("job failed: %s: %s", error.code.value, error.message)
        try:
            await self._publish(job, result)
        except DuplicateWrite:  # its record was final already: that result stands
            await job.msg.term()
            self._done(job, "superseded")
            return
        await job.msg.term()
        self._done(job, "error", error.code.value)

    async def cancelled(self, job: InFlightJob) -> None:
        """End a cancelled job without a result of its own: its canceller stored and sent
        the `cancelled` one (and removed the message; terminating is best effort)."""
        with contextlib.suppress(Exception):
            await job.msg.term()
        if not job.settled:
            self._done(job, "cancelled", ErrorCode.CANCELLED.value)

    async def replay(self, job: InFlightJob, stored: Result) -> None:
        """A redelivered job whose result is already stored: send it again, ack."""
        await self._results.resend(stored, self._reply_to(job))
        [ack] = await _acks_confirmed(self._results, [job])
        if ack is not None:
            raise ack
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
