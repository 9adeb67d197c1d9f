"""Dead-letter jobs that exhausted `max_deliver` without any worker settling them.

When a job crashes or hangs its worker on every attempt, no worker lives to
dead-letter it: JetStream stops delivering it and emits a MAX_DELIVERIES advisory.
`PoisonSweeper` (in every worker; the first to act wins, the stream de-duplicates)
reads the message by sequence, dead-letters it with an error result and deletes it
from the work queue, so it neither sits there forever nor keeps replicas alive.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from function.errors import ErrorCode
from function.jobs import DeadLetter, ErrorInfo, JobStatus, Result, derive_job_id, is_valid_job_id
from function.results import ResultStore
from function.settings import JOBS_STREAM, Header, Priority
from function.telemetry import METRICS

__all__ = ["PoisonSweeper", "advisory_subject"]

log = logging.getLogger("surge.poison")


def advisory_subject(consumer: str, stream: str = JOBS_STREAM) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


class PoisonSweeper:
    """Handles MAX_DELIVERIES advisories for one function's consumers."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, results: ResultStore, function: str, max_deliver: int
    ) -> None:
        self._nc = nc
        self._js = js
        self._results = results
        self._function = function
        self._max_deliver = max_deliver
        self._subs: list[Subscription] = []

    async def start(self, consumers: dict[Priority, str]) -> None:
        for name in consumers.values():
            # No queue group: a frozen worker in the group would swallow advisories.
            # Every worker sweeps; stream de-duplication keeps one letter and one result.
            sub = await self._nc.subscribe(advisory_subject(name), cb=self._on_advisory)
            self._subs.append(sub)

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            await self.sweep(int(advisory["stream_seq"]), int(advisory.get("deliveries", 0)))
        except Exception:
            log.exception("could not dead-letter after a MAX_DELIVERIES advisory")

    async def sweep(self, sequence: int, deliveries: int) -> None:
        """Dead-letter stream message `sequence` unless its result is already stored."""
        try:
            raw = await self._js.get_msg(JOBS_STREAM, seq=sequence)
        except NotFoundError:
            return
        headers = dict(raw.headers or {})
        given = headers.get(Header.MSG_ID, "")
        job_id = given if given and is_valid_job_id(given) else derive_job_id(JOBS_STREAM, sequence)
        attempts = deliveries or self._max_deliver
        if await self._results.lookup(job_id) is None:
            message = f"no worker finished this job in {attempts} attempts (crash or timeout)"
            letter = DeadLetter(
                job_id=job_id,
                function=self._function,
                original_subject=raw.subject or "",
                attempts=attempts,
                last_error=ErrorInfo(code=ErrorCode.MAX_DELIVER_EXCEEDED, message=message),
                stream_sequence=sequence,
                headers=headers,
                payload_b64=base64.b64encode(raw.data or b"").decode(),
            )
            await self._results.dead_letter(letter)
            METRICS.dead_letters.labels(self._function).inc()
            result = Result(
                job_id=job_id,
                status=JobStatus.ERROR,
                function=self._function,
                error=letter.last_error,
                attempts=attempts,
            )
            await self._results.publish(result, headers.get(Header.REPLY_TO), {})
        with contextlib.suppress(NotFoundError):  # another worker swept it first
            await self._js.delete_msg(JOBS_STREAM, sequence)
