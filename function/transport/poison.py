"""Dead-letter jobs that exhausted `max_deliver` without any worker settling them.

When a job crashes or hangs its worker on every attempt, no worker lives to
dead-letter it: JetStream stops delivering it and emits a MAX_DELIVERIES advisory.
The advisory is captured on the `SURGE_ADVISORIES` work-queue stream, so it waits
for a worker even when none runs at that moment (scale to zero). `PoisonSweeper`
pulls the function's advisories from its durable consumer, reads the job by stream
sequence, dead-letters it with an error result, deletes it from the work queue, and
only then acks the advisory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from function.contract.errors import ErrorCode
from function.contract.parse import answer_address
from function.contract.settings import ADVISORIES_STREAM, JOBS_STREAM, tenant_of_stream
from function.contract.wire import DeadLetter, ErrorInfo, JobStatus, ModelInfo, Result
from function.telemetry import METRICS, trace_id_in
from function.transport.periodic import end_task
from function.transport.pull import PullFeed
from function.transport.storage import ResultStore

__all__ = ["PoisonSweeper"]

log = logging.getLogger("surge.poison")

_BATCH = 8
_RETRY_DELAY_S = 5.0


class PoisonSweeper:
    """Sweeps one function's captured MAX_DELIVERIES advisories."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        results: ResultStore,
        function: str,
        max_deliver: int,
        *,
        model: ModelInfo | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._results = results
        self._function = function
        self._max_deliver = max_deliver
        self._model = model
        self._poll_s = poll_s
        self._feed: PullFeed | None = None
        self._loop: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False

    async def start(self, sweeper: str) -> None:
        """Pull advisories from the durable consumer `sweeper` until stopped."""
        self._feed = PullFeed(
            self._nc, ADVISORIES_STREAM, sweeper, self._on_advisory, expires=self._poll_s
        )
        await self._feed.start()
        self._loop = asyncio.create_task(self._pull(self._feed))

    async def _pull(self, feed: PullFeed) -> None:
        while not self._stopped:
            try:
                await feed.request(_BATCH)
            except Exception:
                log.exception("advisory pull failed")
            await feed.wait_ended(self._poll_s)
            if not feed.ended_normally:
                await asyncio.sleep(self._poll_s)

    async def stop(self) -> None:
        # A flag as well as a cancel: nats-py may swallow a cancellation while publishing.
        self._stopped = True
        if self._feed is not None:
            await self._feed.stop()
        if self._loop is not None:
            await end_task(self._loop, self._poll_s + 1)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    def _on_advisory(self, msg: Msg) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            sequence, deliveries = int(advisory["stream_seq"]), int(advisory.get("deliveries", 0))
            stream = str(advisory.get("stream") or JOBS_STREAM)
            if stream != JOBS_STREAM and tenant_of_stream(stream) is None:
                raise ValueError(f"not a jobs stream: {stream!r}")
        except Exception:  # not an advisory JetStream wrote: nothing to sweep, never retried
            log.warning("dropping a malformed MAX_DELIVERIES advisory on %s", msg.subject)
            with contextlib.suppress(Exception):
                await msg.term()
            return
        try:
            await self.sweep(sequence, deliveries, stream)
        except Exception:
            log.exception("could not dead-letter after a MAX_DELIVERIES advisory; will retry")
            with contextlib.suppress(Exception):
                await msg.nak(delay=_RETRY_DELAY_S)
            return
        with contextlib.suppress(Exception):
            await msg.ack()

    async def sweep(self, sequence: int, deliveries: int, stream: str = JOBS_STREAM) -> None:
        """Dead-letter message `sequence` of jobs stream `stream` (the open one or a
        tenant's) unless its result is already stored."""
        try:
            raw = await self._js.get_msg(stream, seq=sequence)
        except NotFoundError:
            return
        headers = dict(raw.headers or {})
        job_id, reply_to, tenant = answer_address(
            raw.subject or "", headers, raw.data or b"", stream=stream, sequence=sequence
        )
        attempts = deliveries or self._max_deliver
        if await self._results.lookup(job_id, tenant) is None:
            message = f"no worker finished this job in {attempts} attempts (crash or timeout)"
            letter = DeadLetter(
                job_id=job_id,
                function=self._function,
                tenant=tenant,
                original_subject=raw.subject or "",
                attempts=attempts,
                last_error=ErrorInfo(code=ErrorCode.MAX_DELIVER_EXCEEDED, message=message),
                stream_sequence=sequence,
                headers=headers,
                payload_b64=base64.b64encode(raw.data or b"").decode(),
                payload_bytes=len(raw.data or b""),
            )
            await self._results.dead_letter(letter)
            METRICS.dead_letters.labels(self._function).inc()
            result = Result(
                job_id=job_id,
                status=JobStatus.ERROR,
                function=self._function,
                tenant=tenant,
                error=letter.last_error,
                model=self._model,
                trace_id=trace_id_in(headers),
                attempts=attempts,
            )
            await self._results.publish(result, reply_to, {})
        with contextlib.suppress(NotFoundError):  # another worker swept it first
            await self._js.delete_msg(stream, sequence)
