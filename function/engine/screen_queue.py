"""Screening through the queue (`SURGE_SCREEN_VIA=queue`): when the screen's model does not
fit beside the main one, each job is screened by the screen function's own workers.

    job ─> remove-bg worker ── screen job ─> surge.jobs.<priority>.nsfw[.<tenant>]
                 │  (holds the job, kept alive)        nsfw worker scores it, stores its
                 │                                      result, replies (open jobs)
                 └─ reads the screen result: rejected ─> content_rejected, with the score
                                             passed   ─> decoded, batched, run

The screen job is an ordinary job of the screen function, so its workers scale on their
own queue and it is stored, retried and dead-lettered like any other. Its id is bound to
the job's id and bytes (`screen_job_id`): a job delivered again after its worker died
finds the screen result already stored and is not screened twice, while another input
under the same id is. The screen job carries the job's `traceparent`, so one trace runs
from the publisher through the screen to the result. A tenant's screen job goes to the
tenant's own stream; its reply could not reach a worker's inbox there, so the worker
reads the stored result instead (it always does, between replies, as a fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from opentelemetry import trace

from function.contract.errors import ErrorCode, JobError, TransientError
from function.contract.parse import msg_id_for
from function.contract.screen import Screen, screen_job_id
from function.contract.settings import Header, job_subject
from function.contract.wire import JobRequest, JobStatus, Result
from function.engine.job import InFlightJob
from function.engine.screen import rejection, score_in
from function.telemetry import METRICS, trace_headers
from function.transport.storage import ResultStore

__all__ = ["SCREEN_WAIT_S", "ScreenGate"]

SCREEN_WAIT_S = 300.0  # then the job is retried (naked), and found stored or asked again
_FIRST_LOOK_S, _LONGEST_LOOK_S = 0.1, 1.0  # between reads of the store, doubling
_tracer = trace.get_tracer("surge")


class ScreenGate:
    """Sends each job to its screen function and lets it through only on a passing score."""

    def __init__(self, nc: NATS, results: ResultStore, screen: Screen, function: str) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._results = results
        self.screen = screen
        self._function = function
        self._inbox: str | None = None
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._passed = METRICS.screened.labels(function, "passed")
        self._rejected = METRICS.screened.labels(function, "rejected")

    async def check(self, job: InFlightJob, request: JobRequest) -> None:
        """Return when the job's screen passed it; raise `JobError` (`content_rejected`,
        or the screen's own error for an input it could not read), or `TransientError`
        when the screen does not answer in time."""
        sid = screen_job_id(request.job_id, job.msg.data)
        context = trace.set_span_in_context(job.span)
        with _tracer.start_as_current_span("screen", context=context) as span:
            span.set_attribute("surge.screen", str(self.screen))
            span.set_attribute("surge.screen.job_id", sid)
            stored = await self._results.lookup(sid, request.tenant)
            if stored is None:
                stored = await self._ask(request, sid)
            if stored.status is not JobStatus.OK:  # e.g. an input the screen cannot read
                error = stored.error
                code = error.code if error else ErrorCode.INFERENCE_FAILED
                why = error.message if error else "no error given"
                raise JobError(code, f"its {self.screen.function} screen failed: {why}")
            score = score_in(stored.outputs, self.screen)
            rejected = self.screen.rejects(score)
            span.set_attribute("surge.screen.score", score)
            span.set_attribute("surge.screen.rejected", rejected)
        if rejected:
            self._rejected.inc()
            raise rejection(self.screen, score)
        self._passed.inc()

    def _screen_job(self, request: JobRequest, sid: str) -> tuple[str, bytes, dict[str, str]]:
        """(subject, payload, headers) of the screen job: the input alone, no outputs,
        webhook or envelope of the job's own."""
        headers = {
            Header.MSG_ID: msg_id_for(sid, request.tenant),
            Header.SCREEN_FOR: self._function,
            **trace_headers(),
        }
        if request.deadline is not None:
            headers[Header.DEADLINE] = request.deadline.isoformat()
        if request.image is not None:
            payload = request.image
            headers[Header.CONTENT_TYPE] = request.content_type or "application/octet-stream"
        else:  # a large input stays in the bucket: the screen reads it from there
            payload = json.dumps({"image_ref": request.image_ref}).encode()
            headers[Header.CONTENT_TYPE] = "application/json"
        subject = job_subject(request.priority, self.screen.function, request.tenant)
        return subject, payload, headers

    async def _ask(self, request: JobRequest, sid: str) -> Result:
        """Queue the screen job (once: its id de-duplicates) and wait for its result."""
        subject, payload, headers = self._screen_job(request, sid)
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
            return await self._result(future, sid, request.tenant)
        finally:
            if self._waiting.get(sid) is future:
                del self._waiting[sid]

    async def _result(self, future: asyncio.Future[Result], sid: str, tenant: str | None) -> Result:
        """The reply, or the stored result, whichever is seen first."""
        deadline = time.monotonic() + SCREEN_WAIT_S
        look = _FIRST_LOOK_S
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), look)
            except TimeoutError:
                pass
            stored = await self._results.lookup(sid, tenant)
            if stored is not None:
                return stored
            if time.monotonic() > deadline:
                raise TransientError(
                    f"its {self.screen.function} screen did not answer in {SCREEN_WAIT_S:g}s"
                )
            look = min(look * 2, _LONGEST_LOOK_S)

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
