"""What the system looks like from outside: backlog, ready replicas, dead letters.

* backlog: `num_pending + num_ack_pending` of both priority consumers on the open jobs
  stream and on every tenant's stream (what the scaler reads); where no worker or
  scaler created them yet, the stream's message count on the function's subjects
  (WorkQueue: a stored job is a pending job);
* replicas: distinct `worker_id`s whose latest heartbeat says `ready` and is recent
  (within 2.5 heartbeat intervals, at least 1.5 s); workers of other functions are
  counted too, so that a run against a function nobody serves can say so;
* dead letters: this run's jobs on `SURGE_DEAD` (`surge.dead.<function>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.settings import (
    DEAD_STREAM,
    JOBS_STREAM,
    Priority,
    consumer_name,
    dead_subject,
    heartbeat_subject,
    job_subject,
    tenant_stream,
)
from function.contract.wire import DeadLetter
from function.transport.tenants import list_tenants

__all__ = ["BacklogProbe", "HeartbeatTracker", "read_dead_letters"]

_MAX_OTHERS = 100
"""Other functions, and workers of each, remembered at most (heartbeats are not bounded)."""


class HeartbeatTracker:
    """Remembers each worker's latest heartbeat for one function, and which workers of
    other functions were heard from (a run against a function nobody serves says so)."""

    def __init__(self, nc: NATS, function: str) -> None:
        self._nc = nc
        self._function = function
        self._latest: dict[str, tuple[float, Heartbeat]] = {}
        self._ever_ready: set[str] = set()
        self._cold_starts: dict[str, float] = {}
        self._others: dict[str, set[str]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(heartbeat_subject("*"), cb=self._on_beat)

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValueError:
            return
        if beat.function != self._function:
            name = beat.function[:64]
            if name in self._others or len(self._others) < _MAX_OTHERS:
                workers = self._others.setdefault(name, set())
                if len(workers) < _MAX_OTHERS:
                    workers.add(beat.worker_id)
            return
        self._latest[beat.worker_id] = (time.monotonic(), beat)
        if beat.cold_start_s is not None:
            self._cold_starts[beat.worker_id] = beat.cold_start_s
        if beat.state is WorkerState.READY:
            self._ever_ready.add(beat.worker_id)

    @property
    def seen(self) -> int:
        """Distinct workers of the function heard from since start."""
        return len(self._latest)

    @property
    def ever_ready(self) -> int:
        """Distinct workers of the function that reported ready at least once."""
        return len(self._ever_ready)

    def started_before(self, moment: datetime) -> int:
        """Workers of the function heard from that had started before `moment`."""
        return sum(beat.started_at < moment for _, beat in self._latest.values())

    def cold_start_s(self) -> float | None:
        """The median start-to-ready the function's workers reported; None if none did."""
        starts = sorted(self._cold_starts.values())
        return starts[(len(starts) - 1) // 2] if starts else None

    def others(self) -> dict[str, int]:
        """{function: distinct workers heard from} for every other function."""
        return {name: len(ids) for name, ids in sorted(self._others.items())}

    def ready(self, now: float | None = None) -> int | None:
        """Workers ready now; None when no worker has ever been heard from."""
        if not self._latest:
            return None
        now = time.monotonic() if now is None else now
        return sum(
            beat.state is WorkerState.READY and now - seen <= max(2.5 * beat.interval_s, 1.5)
            for seen, beat in self._latest.values()
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()


class BacklogProbe:
    """Reads the backlog of one function's priority consumers, open and tenants'."""

    def __init__(self, js: JetStreamContext, function: str, timeout: float = 1.0) -> None:
        self._js = js
        self._function = function
        self._timeout = timeout

    async def _one(self, priority: Priority, tenant: str | None = None) -> int:
        stream = JOBS_STREAM if tenant is None else tenant_stream(tenant)
        try:
            info = await self._js.consumer_info(
                stream, consumer_name(self._function, priority), timeout=self._timeout
            )
        except NotFoundError:
            subject = job_subject(priority, self._function, tenant)
            try:
                found = await self._js.stream_info(stream, subjects_filter=subject)
            except NotFoundError:
                if tenant is None:
                    raise
                return 0  # the tenant was removed since the listing
            return int((found.state.subjects or {}).get(subject, 0))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def backlog(self) -> int | None:
        """Pending + ack-pending over both priorities of the open jobs stream and every
        tenant's stream, or None if the server did not say."""
        try:
            sources: list[str | None] = [None, *await list_tenants(self._js)]
            counts = await asyncio.gather(
                *(self._one(p, tenant) for tenant in sources for p in Priority)
            )
        except Exception:
            return None
        return sum(counts)


async def read_dead_letters(
    js: JetStreamContext, function: str, since: datetime, run_prefix: str, idle: float = 1.0
) -> list[DeadLetter]:
    """Dead letters of this run (job id starting with `run_prefix`) stored since `since`."""
    try:
        await js.stream_info(DEAD_STREAM)
    except NotFoundError:
        return []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(dead_subject(function), stream=DEAD_STREAM, config=config)
    letters: list[DeadLetter] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=idle)
            except TimeoutError:
                break
            for msg in msgs:
                with contextlib.suppress(ValueError):
                    letter = DeadLetter.model_validate_json(msg.data)
                    if letter.job_id.startswith(run_prefix):
                        letters.append(letter)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return letters
