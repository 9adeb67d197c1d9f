"""`CallGateway`: request/reply for NATS users, `nats req surge.call.<function>`.

A JetStream publish answers its sender with a PubAck, so a `nats req` to a jobs subject
gets that, not the result. A request to `surge.call.<function>` instead reaches one
worker of the function (a queue group), which stores it as a `high` job on the jobs
stream with the request's reply subject as `Surge-Reply-To`: the job then takes the
same queue, priorities and guarantees as any other, and its result is the reply.
`Content-Type`, `Surge-Outputs`, `Surge-Deadline` and the trace headers carry over. If
the job cannot be stored, the reply is an error result at once; a request without a
reply subject has no one to answer and is dropped (and counted).
"""

from __future__ import annotations

import contextlib
import logging
import uuid

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import APIError

from function.contract.bounds import message_size, reply_subject_problem
from function.contract.errors import ErrorCode
from function.contract.parse import job_headers
from function.contract.settings import Header, Priority, call_subject, job_subject
from function.contract.wire import ErrorInfo, JobStatus, Result
from function.telemetry import METRICS

__all__ = ["CALL_HEADERS", "CallGateway"]

log = logging.getLogger("surge.calls")

# The request headers a call's job keeps; the gateway sets its id and reply subject.
CALL_HEADERS = (
    Header.CONTENT_TYPE,
    Header.OUTPUTS,
    Header.DEADLINE,
    Header.TRACEPARENT,
    Header.TRACESTATE,
)
_STORE_TIMEOUT_S = 5.0
_MAX_MSG_SIZE_EXCEEDED = 10054


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes do not fit the server's max_payload with the headers")


class CallGateway:
    """Turns requests on `surge.call.<function>` into jobs answered to the requester."""

    def __init__(self, nc: NATS, js: JetStreamContext, function: str) -> None:
        self._nc = nc
        self._js = js
        self.function = function
        self._sub: Subscription | None = None
        self.calls = 0

    async def start(self) -> None:
        subject = call_subject(self.function)
        self._sub = await self._nc.subscribe(subject, queue=subject, cb=self._on_call)

    async def stop(self) -> None:
        """Take no more requests (those stored already are answered by the queue)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):  # a closed connection has no subscriptions
                await self._sub.drain()  # type: ignore[no-untyped-call]  # queued ones stay
            self._sub = None

    async def _on_call(self, msg: Msg) -> None:
        if not msg.reply or reply_subject_problem(msg.reply) is not None:
            METRICS.reply_failures.labels(self.function).inc()
            log.warning("a call on %s without a usable reply subject was dropped", msg.subject)
            return
        job_id = uuid.uuid4().hex
        given = msg.headers or {}
        headers = {name: given[name] for name in CALL_HEADERS if given.get(name)}
        headers.update(job_headers(job_id, reply_to=msg.reply))
        if message_size(msg.data, headers) > self._nc.max_payload:  # the server would close
            await self._refuse(msg.reply, job_id, _TooLarge(len(msg.data)))  # the connection
            return
        try:
            await self._store(msg.data, headers)
        except Exception as exc:
            await self._refuse(msg.reply, job_id, exc)
            return
        self.calls += 1

    async def _store(self, data: bytes, headers: dict[str, str]) -> None:
        """Store the job; an unanswered store is tried once more under the same
        `Nats-Msg-Id` (JetStream keeps one copy), so a slow store is not refused while
        its job runs."""
        subject = job_subject(Priority.HIGH, self.function)
        try:
            await self._js.publish(subject, data, headers=headers, timeout=_STORE_TIMEOUT_S)
        except NatsTimeoutError:
            await self._js.publish(subject, data, headers=headers, timeout=_STORE_TIMEOUT_S)

    async def _refuse(self, reply: str, job_id: str, exc: Exception) -> None:
        """Answer a call whose job could not be stored, at once."""
        refused = isinstance(exc, APIError) and exc.err_code == _MAX_MSG_SIZE_EXCEEDED
        too_large = refused or isinstance(exc, _TooLarge)
        code = ErrorCode.PAYLOAD_TOO_LARGE if too_large else ErrorCode.NOT_READY
        message = f"the job could not be queued: {type(exc).__name__}: {exc}"[:512]
        result = Result(
            job_id=job_id,
            status=JobStatus.ERROR,
            function=self.function,
            error=ErrorInfo(code=code, message=message),
        )
        headers = {Header.JOB_ID: job_id, Header.STATUS: "error", Header.ERROR_CODE: code.value}
        log.warning("call refused: %s", message, extra={"job_id": job_id})
        try:
            await self._nc.publish(reply, result.model_dump_json().encode(), headers=headers)
        except Exception as reply_error:
            METRICS.reply_failures.labels(self.function).inc()
            log.warning("could not answer a refused call: %r", reply_error)
