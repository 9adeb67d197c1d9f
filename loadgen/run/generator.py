"""The open-loop load generator: Poisson arrivals on the wall clock, every job accounted.

    async with connect(url) as nc:
        report = await LoadRun(nc, profile, LoadOptions(function="tiny")).run()

Each arrival is published at its scheduled time whatever the system does (a core
publish with a per-job reply subject collects JetStream's PubAck without waiting for it),
so a slow system cannot slow the generator; latency runs from the scheduled time. After
the arrival phase the run waits up to `drain_timeout_s` for the rest, looks up results
that never reached the inbox in `SURGE_RESULTS`, reads this run's dead letters, and
calls whatever is still without an outcome missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from function.contract.parse import job_headers
from function.contract.settings import (
    DEFAULT_FUNCTION,
    JOBS_STREAM,
    Header,
    Priority,
    WorkerSettings,
    job_subject,
)
from function.transport.storage import fetch_result
from function.transport.topology import ensure_streams
from loadgen.run.ledger import Ledger
from loadgen.run.monitor import BacklogProbe, HeartbeatTracker, read_dead_letters
from loadgen.run.profiles import Profile, poisson_arrivals
from loadgen.run.records import RunConfig, RunReport
from loadgen.run.timeline import build_report

__all__ = ["LoadOptions", "LoadRun", "Snapshot"]

LOOKUP_CONCURRENCY = 64


@dataclass
class LoadOptions:
    """How to run a profile: target function, bounds, payload."""

    function: str = DEFAULT_FUNCTION
    seed: int = 1
    high_fraction: float = 0.0
    max_jobs: int | None = None
    max_time_s: float | None = None
    drain_timeout_s: float = 30.0
    payload: bytes = b""
    content_type: str = "image/png"


@dataclass
class Snapshot:
    """Progress, once per second."""

    t: float
    phase: str
    scheduled: int
    expected: int
    answered: int
    backlog: int | None
    replicas: int | None


class LoadRun:
    """One run of a profile against a NATS server; `run()` returns the report."""

    def __init__(
        self,
        nc: NATS,
        profile: Profile,
        options: LoadOptions,
        *,
        nats_url: str = "",
        route: Callable[[int], str] | None = None,
        on_sample: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.nc = nc
        self.profile = profile
        self.options = options
        self.nats_url = nats_url
        self.run_id = f"lg{uuid.uuid4().hex[:10]}"
        self.ledger = Ledger(self.run_id)
        self.samples: list[tuple[int, int | None, int | None]] = []
        self.phase = "publishing"
        self._route = route or self._default_route
        self._priorities = random.Random(options.seed + 1)
        self._on_sample = on_sample
        self._t0 = time.monotonic()
        self._epoch0 = time.time()
        self._stop = asyncio.Event()
        self.expected = self._expected()

    def _expected(self) -> int:
        end = self.arrival_end()
        jobs = round(self.profile.expected_jobs(end))
        return min(jobs, self.options.max_jobs) if self.options.max_jobs else jobs

    def arrival_end(self) -> float:
        """How long the arrival phase lasts at most."""
        limit = self.options.max_time_s
        return self.profile.duration if limit is None else min(limit, self.profile.duration)

    def _default_route(self, index: int) -> str:
        high = self._priorities.random() < self.options.high_fraction
        return job_subject(Priority.HIGH if high else Priority.NORMAL, self.options.function)

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._t0

    async def run(self) -> RunReport:
        """Publish the profile, wait for results, account for every job, build the report."""
        js = self.nc.jetstream()
        await _ensure_jobs_stream(js)
        tracker = HeartbeatTracker(self.nc, self.options.function)
        await tracker.start()
        results_subject, ack_prefix = self.nc.new_inbox(), self.nc.new_inbox()
        subs = [
            await self.nc.subscribe(results_subject, cb=self._on_result),
            await self.nc.subscribe(f"{ack_prefix}.*", cb=self._on_ack),
        ]
        await self.nc.flush()
        started_at = datetime.now(UTC)
        self._t0, self._epoch0 = time.monotonic(), time.time()
        probe = BacklogProbe(js, self.options.function)
        sampler = asyncio.create_task(self._sample_loop(probe, tracker))
        try:
            await self._publish_all(results_subject, ack_prefix)
            arrival_phase = self.now()
            self.phase = "draining"
            await self._drain(arrival_phase + self.options.drain_timeout_s)
            elapsed = self.now()
        finally:
            self._stop.set()
            await sampler
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await tracker.stop()
        self.phase = "accounting"
        await self._lookup_stored(js)
        letters = await read_dead_letters(js, self.options.function, started_at, f"{self.run_id}-")
        for letter in letters:
            index = self.ledger.index(letter.job_id)
            if index is not None:
                self.ledger.dead.add(index)
        return build_report(
            self.ledger,
            self.samples,
            config=self._config(),
            started_at=started_at,
            arrival_phase_s=arrival_phase,
            elapsed_s=elapsed,
            workers_seen=tracker.seen,
            workers_ready_seen=tracker.ever_ready,
            other_functions_seen=tracker.others(),
            cold_start_s=tracker.cold_start_s(),
            running_before=tracker.started_before(started_at),
        )

    async def _publish_all(self, results_subject: str, ack_prefix: str) -> None:
        options, ledger = self.options, self.ledger
        end = self.arrival_end()
        for offset in poisson_arrivals(self.profile, options.seed):
            if offset > end or (options.max_jobs is not None and len(ledger) >= options.max_jobs):
                break
            delay = offset - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            elif len(ledger) % 32 == 0:
                await asyncio.sleep(0)  # behind schedule: still let callbacks run
            index = ledger.add(offset)
            headers = job_headers(
                ledger.job_id(index), content_type=options.content_type, reply_to=results_subject
            )
            ledger.sent[index] = self.now()
            try:
                await self.nc.publish(
                    self._route(index),
                    options.payload,
                    reply=f"{ack_prefix}.{index}",
                    headers=headers,
                )
            except Exception as exc:
                ledger.sent[index] = math.nan
                ledger.rejected[index] = f"publish_failed_{type(exc).__name__}"
        hit_job_limit = options.max_jobs is not None and len(ledger) >= options.max_jobs
        if not hit_job_limit and end - self.now() > 0:
            await asyncio.sleep(end - self.now())
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=10)

    async def _drain(self, deadline: float) -> None:
        """Until every published job has an outcome, or `deadline` (run seconds)."""
        ledger = self.ledger
        while self.now() < deadline:
            settled = ledger.answered_count + len(ledger.rejected)
            if settled >= len(ledger):
                return
            await asyncio.sleep(0.1)

    async def _on_ack(self, msg: Msg) -> None:
        tail = msg.subject.rsplit(".", 1)[-1]
        if tail.isdigit() and int(tail) < len(self.ledger):
            self.ledger.on_ack(int(tail), self.now(), msg)

    async def _on_result(self, msg: Msg) -> None:
        job_id = (msg.headers or {}).get(Header.JOB_ID, "")
        index = self.ledger.index(job_id)
        if index is not None:
            self.ledger.on_result(index, self.now(), msg)

    async def _lookup_stored(self, js: JetStreamContext) -> None:
        """Results that never reached the inbox, from SURGE_RESULTS."""
        pending = self.ledger.unanswered()
        for start in range(0, len(pending), LOOKUP_CONCURRENCY):
            chunk = pending[start : start + LOOKUP_CONCURRENCY]
            found = await asyncio.gather(
                *(fetch_result(js, self.ledger.job_id(i)) for i in chunk), return_exceptions=True
            )
            for index, result in zip(chunk, found, strict=True):
                if result is None or isinstance(result, BaseException):
                    continue
                finished = result.finished_at.timestamp() - self._epoch0
                self.ledger.on_stored(index, finished, result)

    async def _sample_loop(self, probe: BacklogProbe, tracker: HeartbeatTracker) -> None:
        """Backlog and ready replicas at the end of every second."""
        second = 0
        while not self._stop.is_set():
            second = max(second + 1, math.ceil(self.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(second - self.now(), 0))
            backlog = await probe.backlog()
            replicas = tracker.ready()
            self.samples.append((second, backlog, replicas))
            if self._on_sample is not None:
                self._on_sample(
                    Snapshot(
                        t=self.now(),
                        phase=self.phase,
                        scheduled=len(self.ledger),
                        expected=self.expected,
                        answered=self.ledger.answered_count,
                        backlog=backlog,
                        replicas=replicas,
                    )
                )

    def _config(self) -> RunConfig:
        o = self.options
        return RunConfig(
            profile=self.profile.name,
            profile_description=self.profile.description,
            profile_points=self.profile.points,
            function=o.function,
            nats_url=self.nats_url,
            seed=o.seed,
            high_fraction=o.high_fraction,
            max_jobs=o.max_jobs,
            max_time_s=o.max_time_s,
            drain_timeout_s=o.drain_timeout_s,
            payload_bytes=len(o.payload),
            content_type=o.content_type,
        )


async def _ensure_jobs_stream(js: JetStreamContext) -> None:
    """Create Surge's streams when none exist yet (jobs then wait for a first worker)."""
    try:
        await js.stream_info(JOBS_STREAM)
    except NotFoundError:
        await ensure_streams(js, WorkerSettings())
