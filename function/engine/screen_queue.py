"""Screening through the queue (`SURGE_SCREEN_VIA=queue`): when the screen's model does not
fit beside the main one, each job is screened by the screen function's own workers.

    job ─> remove-bg worker ── screen job ─> surge.jobs.<priority>.nsfw[.<tenant>]
                 │  (holds the job, kept alive)        nsfw worker scores it, stores its
                 │                                      result, replies (open jobs)
                 └─ reads the screen result: rejected ─> content_rejected, with the score
                                             passed   ─> decoded, batched, run

The screen job is an ordinary job of the screen function, so its workers scale on their
own queue and it is stored, retried and dead-lettered like any other. It carries the input
the worker read (a large one by its bucket reference), and its result names the sha256 of
what the screen scored (`input_sha256`): the job goes by a screen result only when that is
the digest of its own input, so a result stored under a guessed id, or a bucket object
changed between the two reads, lets nothing through. Its id is bound to the job's id and
bytes (`screen_job_id`): a job delivered again after its worker died finds the screen
result already stored and is not screened twice. The screen job carries the job's
`traceparent`, so one trace runs from the publisher through the screen to the result.
A tenant's screen job goes to the tenant's own stream (it counts against the tenant's
`max_rate` and limits like any job of theirs); its reply could not reach a worker's inbox
there, so the worker reads the stored result instead (it always does, between replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from opentelemetry import trace

from function.contract.errors import ErrorCode, JobError, TransientError
from function.contract.parse import msg_id_for
from function.contract.screen import Screen, input_sha256, screen_job_id
from function.contract.settings import Header, WorkerSettings, job_subject
from function.contract.wire import JobRequest, JobStatus, Result
from function.engine.inflight import InFlightJob
from function.engine.keepalive import KEEP_ALIVE_ACK_WAITS
from function.engine.screen import rejection, score_in
from function.telemetry import METRICS, trace_headers
from function.transport.storage import ResultStore

__all__ = ["SCREEN_WAIT_S", "ScreenGate"]

SCREEN_WAIT_S = 300.0  # then the job is retried (naked), and found stored or asked again
_FIRST_LOOK_S, _LONGEST_LOOK_S = 0.1, 1.0  # between reads of the store, doubling
# a screen's error result that speaks for the input (asked again, it would say the same)
_INPUT_ERRORS = frozenset(
    {
        ErrorCode.BAD_IMAGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.TOO_MANY_PIXELS,
        ErrorCode.PAYLOAD_TOO_LARGE,
    }
)
_tracer = trace.get_tracer("surge")


class ScreenGate:
    """Sends each job to its screen function and lets it through only on a passing score."""

    def __init__(
        self,
        nc: NATS,
        results: ResultStore,
        screen: Screen,
        settings: WorkerSettings,
        stopping: asyncio.Event,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._results = results
        self.screen = screen
        self._function = settings.function
        self._stopping = stopping
        # a job still waiting must not outlive its keep-alive: it would be redelivered
        self._wait_s = min(SCREEN_WAIT_S, (KEEP_ALIVE_ACK_WAITS - 1) * settings.ack_wait_s)
        self._inbox: str | None = None
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._passed = METRICS.screened.labels(self._function, "passed")
        self._rejected = METRICS.screened.labels(self._function, "rejected")

    async def passes(self, job: InFlightJob, request: JobRequest, data: bytes) -> bool:
        """True when the job's screen passed its input `data`; False when the worker
        stops or the job is cancelled meanwhile. Raises `JobError` (`content_rejected`,
        or the screen's own error for an input it could not read), or `TransientError`
        when the screen does not answer in time."""
        digest = input_sha256(data)  # hashed once: the screen id and the check both use it
        sid = screen_job_id(request.job_id, digest)
        context = trace.set_span_in_context(job.span)
        with _tracer.start_as_current_span("screen", context=context) as span:
            span.set_attribute("surge.screen", str(self.screen))
            scored = await self._results.lookup(sid, request.tenant)
            if scored is None or not self._vouches(scored, digest):  # none, or not for these
                # bytes (anyone may store a result under a guessable id: ask under one of ours)
                sid = sid if scored is None else f"{sid}-{uuid.uuid4().hex[:12]}"
                scored = await self._ask(job, request, data, sid)
                if scored is None:
                    return False
                if not self._vouches(scored, digest):
                    raise TransientError(f"its {self.screen.function} screen scored other bytes")
            span.set_attribute("surge.screen.job_id", sid)
            if scored.status is not JobStatus.OK:  # an input the screen cannot read
                error = scored.error
                code = error.code if error else ErrorCode.INFERENCE_FAILED
                why = error.message if error else "no error given"
                raise JobError(code, f"its {self.screen.function} screen failed: {why}")
            score = score_in(scored.outputs, self.screen)
            rejected = self.screen.rejects(score)
            span.set_attribute("surge.screen.score", score)
            span.set_attribute("surge.screen.rejected", rejected)
        if rejected:
            self._rejected.inc()
            raise rejection(self.screen, score)
        self._passed.inc()
        return True

    def _vouches(self, scored: Result, digest: str) -> bool:
        """A screen result this job may go by: the screen function's, on these bytes, and
        final for them (a pass, a rejection, or an input it cannot read; not an outage)."""
        if scored.function != self.screen.function:
            return False
        if scored.input_sha256 != digest:
            return False
        return scored.status is JobStatus.OK or (
            scored.error is not None and scored.error.code in _INPUT_ERRORS
        )

    def _screen_job(
        self, request: JobRequest, data: bytes, sid: str
    ) -> tuple[str, bytes, dict[str, str]]:
        """(subject, payload, headers) of the screen job: the input itself (read once, so
        the screen scores the bytes the model will run on), no outputs, webhook or
        envelope of the job's own."""
        headers = {
            Header.MSG_ID: msg_id_for(sid, request.tenant),
            Header.SCREEN_FOR: self._function,
            Header.CONTENT_TYPE: request.content_type or "application/octet-stream",
            **trace_headers(),
        }
        if request.deadline is not None:
            headers[Header.DEADLINE] = request.deadline.isoformat()
        payload = data
        if request.image_ref is not None and len(data) > self._nc.max_payload // 2:
            # too large to carry: the screen reads the bucket (its digest says what it read)
            payload = json.dumps({"image_ref": request.image_ref}).encode()
            headers[Header.CONTENT_TYPE] = "application/json"
        subject = job_subject(request.priority, self.screen.function, request.tenant)
        return subject, payload, headers

    async def _ask(
        self, job: InFlightJob, request: JobRequest, data: bytes, sid: str
    ) -> Result | None:
        """Queue the screen job (once: its id de-duplicates) and wait for its result;
        None when the worker stops or the job is cancelled first."""
        subject, payload, headers = self._screen_job(request, data, sid)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if request.tenant is None:  # a tenant's jobs answer only under its own inbox prefix
            headers[Header.REPLY_TO] = f"{await self._reply_inbox()}.{sid}"
            self._waiting[sid] = future
        try:
            try:
                await self._js.publish(subject, payload, headers=headers)
            except (NatsError, TimeoutError) as exc:
                why = f"queueing its {self.screen.function} screen: {exc!r}"
                raise TransientError(why) from exc
            return await self._result(job, future, sid, request.tenant)
        finally:
            if self._waiting.get(sid) is future:
                del self._waiting[sid]

    async def _result(
        self, job: InFlightJob, future: asyncio.Future[Result], sid: str, tenant: str | None
    ) -> Result | None:
        """The reply, or the stored result, whichever is seen first."""
        deadline = time.monotonic() + self._wait_s
        look = _FIRST_LOOK_S
        while not (self._stopping.is_set() or job.cancelled):
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), look)
            stored = await self._results.lookup(sid, tenant)
            if stored is not None:
                return stored
            if time.monotonic() > deadline:
                raise TransientError(
                    f"its {self.screen.function} screen did not answer in {self._wait_s:g}s"
                )
            look = min(look * 2, _LONGEST_LOOK_S)
        return None

    async def _reply_inbox(self) -> str:
        if self._inbox is None:
            inbox = self._nc.new_inbox()
            await self._nc.subscribe(f"{inbox}.*", cb=self._on_reply)
            self._inbox = inbox
        return self._inbox

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if future is None or future.done():
            return
        with contextlib.suppress(ValueError):  # not a result: the store is read instead
            future.set_result(Result.model_validate_json(msg.data))
