"""`JobEvents`: a job's state changes published on `surge.events.[<tenant>.]<job id>`,
for whoever watches (`surge status --wait`, an SDK's `Job.wait`, a dashboard).

Best effort, off the job's path: `emit()` only queues (a full queue drops the event and
counts it); one task publishes on core NATS, nothing is kept. A watcher that must not
miss the end reads the job's stored result, which events never replace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS

from function.contract.lifecycle import JobEvent, JobState
from function.contract.settings import events_subject

__all__ = ["JobEvents"]

log = logging.getLogger("surge.events")

QUEUE_LIMIT = 10_000


class JobEvents:
    """Publishes one worker's job events from a bounded queue."""

    def __init__(self, nc: NATS, worker_id: str, limit: int = QUEUE_LIMIT) -> None:
        self._nc = nc
        self._worker_id = worker_id
        self._queue: asyncio.Queue[tuple[str, str | None, JobEvent]] = asyncio.Queue(limit)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def emit(self, job_id: str, tenant: str | None, state: JobState, detail: str = "") -> None:
        """Queue an event (never blocks; a full queue drops it)."""
        event = JobEvent(job_id=job_id, state=state, worker=self._worker_id, detail=detail)
        try:
            self._queue.put_nowait((job_id, tenant, event))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            job_id, tenant, event = await self._queue.get()
            try:
                body = event.model_dump_json().encode()
                await self._nc.publish(events_subject(job_id, tenant), body)
            except Exception as exc:  # the connection is closing: events are best effort
                log.debug("event not sent: %r", exc)
            finally:
                self._queue.task_done()

    async def stop(self, timeout: float = 1.0) -> None:
        """Publish what is queued (for at most `timeout`), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
