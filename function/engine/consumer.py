"""The JetStream pull loop: fetch (high before normal), prepare, batch, infer, settle.

Stages, all in one event loop; blocking work runs in thread pools:

1. one pull feed per priority and source (the open jobs stream, each tenant's stream)
   keeps at most `max_batch` admitted-but-unbatched jobs (and each source at most
   `4 x max_batch` unsettled ones), each handed over on arrival;
2. admission parses, answers redeliveries from the result store, reads blob inputs,
   and decodes + preprocesses (small inputs inline, others in the CPU pool);
3. the batch loop takes up to `max_batch` ready jobs (high first, sources in turn, waiting at most
   `max_batch_wait_ms` to fill while more are pending) and runs one inference in a
   dedicated thread; a worker's first batch is a single job, so that a worker started
   from zero on a backlog answers its first job as soon as its fresh session can;
4. completion postprocesses, stores the result, replies and acks, while the next batch
   already runs.

`stop()` drains: close the pull feeds (so handed-back jobs go to other replicas), hand
back (nak) what has not started, finish the batch in hand, publish, ack; whatever is
still unsettled at the drain timeout is handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace

from function.contract.errors import JobError
from function.contract.lifecycle import JobState
from function.contract.settings import Priority, WorkerSettings
from function.contract.wire import JobRequest, ModelInfo, Output, Timings
from function.engine.accounting import BusyClock
from function.engine.batcher import PriorityBatcher
from function.engine.batchmodel import BatchModel, run_in
from function.engine.budget import PixelBudget, pixel_budget
from function.engine.cpuprocs import cpu_processes
from function.engine.direct import DirectInference
from function.engine.feeds import FeedKey, Feeds
from function.engine.finish import Completion
from function.engine.inflight import InFlightJob, split_expired, stream_position, wall_ns
from function.engine.job import Admission
from function.engine.keepalive import keep_alive
from function.engine.modelset import ModelSet, VersionedSettler
from function.engine.ratelimit import TenantRates
from function.engine.screen import Screening
from function.engine.screen_queue import ScreenGate
from function.models.hardware import usable_cpus
from function.telemetry import context_from_headers
from function.transport.cache import ResultCache
from function.transport.connection import Trouble
from function.transport.events import JobEvents
from function.transport.storage import ResultStore
from function.transport.webhooks import WebhookSender

__all__ = ["JobConsumer"]

log = logging.getLogger("surge.consumer")
_tracer = trace.get_tracer("surge")


class JobConsumer:
    """Consumes one function's jobs from both priority consumers of the open jobs stream
    and of every tenant's stream added, until stopped."""

    def __init__(
        self,
        nc: NATS,
        consumers: dict[Priority, str],
        model: BatchModel,
        results: ResultStore,
        settings: WorkerSettings,
        events: JobEvents | None = None,
        webhooks: WebhookSender | None = None,
        screening: Screening | None = None,
    ) -> None:
        self._nc = nc
        self._events = events
        self._consumers = consumers
        self.models = model if isinstance(model, ModelSet) else ModelSet(model)
        self._model = model = self.models  # every stage sees the versions serving now
        self._results = results
        self._settings = settings
        self._batcher: PriorityBatcher[InFlightJob] = PriorityBatcher(
            settings.max_batch, settings.max_batch_wait_ms / 1000, self._more_expected
        )
        self._pending_hint: dict[FeedKey, int] = {}
        self._in_flight: set[InFlightJob] = set()
        self._held: dict[str, int] = {}
        self._by_sequence: dict[tuple[str, int], InFlightJob] = {}
        self._admitting: dict[FeedKey, int] = {}
        self.rates = TenantRates()
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runners = max(1, settings.runners)
        self._infer_pool = ThreadPoolExecutor(self._runners, thread_name_prefix="surge-infer")
        # decode, preprocess, postprocess and encoding: across every usable CPU
        cpu_threads = max(2, usable_cpus())
        self._cpu_pool = ThreadPoolExecutor(cpu_threads, thread_name_prefix="surge-cpu")
        self._cache = (
            ResultCache(nc.jetstream(), settings, model.info.version) if settings.cache else None
        )
        if self._cache is not None:  # cached answers are the stable version's
            self.models.on_stable = self._cache.use_version
        self._settler = VersionedSettler(
            self.models, results, settings, model.info, self._forget, events, webhooks, self._cache
        )
        # room for every runner's batch: the default budget scales with runners x max_batch
        jobs_at_once = settings.max_batch * self._runners
        self._budget = PixelBudget(pixel_budget(settings.pixel_budget, jobs_at_once))
        self._admission = Admission(
            model,
            results,
            self._settler,
            settings,
            self._cpu_pool,
            self._budget,
            self._stopping,
            self.rates,
            self._cache,
            screening,
        )
        self._admission.cacheable = self.models.on_stable_version
        if settings.screen is not None and settings.screen_via == "queue":
            gate = ScreenGate(nc, results, settings.screen, settings, self._stopping)
            self._admission.gate = gate
        self._completion = Completion(model, self._settler, settings, self._cpu_pool)
        self.processes = cpu_processes(settings, model, screening=screening is not None)
        self._admission.processes = self._completion.processes = self.processes
        cpu_room = self.processes.room if self.processes else 0
        self._window = max(self._runners * settings.max_batch, cpu_room)  # jobs prepared at once
        self._direct = DirectInference(
            model,
            results,
            self._admission,
            self._infer_pool,
            self._cpu_pool,
            self._budget,
            self._settler.metrics,
        )
        self._main: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None  # the CPU processes' start
        self._feeds = Feeds(nc, settings, self._admit, self._room_for, self._room, self._stopping)
        self._feeds.on_trouble = lambda: self.on_pull_trouble() if self.on_pull_trouble else None
        self._feeds.on_loop_done = self._on_main_done
        self.failed: BaseException | None = None
        self._running: dict[int, int] = {}  # id of a running batch -> its start (wall ns)
        self.busy = BusyClock()  # seconds with a batch running, for the idle-warm meter
        self.on_pull_trouble: Callable[[], None] | None = None

    @property
    def tenants(self) -> list[str]:
        """The tenants whose streams this consumer fetches from."""
        return self._feeds.tenants

    @property
    def pull_trouble(self) -> Trouble | None:
        """The oldest failing pull (a missing stream or consumer, an error status)."""
        return self._feeds.trouble

    @property
    def model_info(self) -> ModelInfo:
        """The stable version's: what direct (HTTP) jobs run on."""
        return self.models.info

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def completed(self) -> int:
        return self._completion.completed

    @property
    def first_job_at(self) -> float | None:
        return self._completion.first_job_at

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._completion.batch_sizes)

    def held(self, stream: str, sequence: int) -> InFlightJob | None:
        """The job this worker holds for stream message (`stream`, `sequence`), if any."""
        return self._by_sequence.get((stream, sequence))

    def _forget(self, job: InFlightJob) -> None:
        if job in self._in_flight:
            self._in_flight.discard(job)
            self._held[job.source] -= 1
        key = stream_position(job.msg)
        if self._by_sequence.get(key) is job:
            del self._by_sequence[key]
        self._settler.metrics.in_flight.set(len(self._in_flight))
        self._admission.release(job)
        self._room.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Open one pull feed per priority and start fetching."""
        if self._cache is not None:
            self._cache.start()
        loops: list[Any] = await self._feeds.open_jobs(self._consumers)
        loops += [
            self._batch_loop(),
            keep_alive(self._in_flight, self._settings.ack_wait_s, self._stopping),
        ]
        self._main = asyncio.create_task(self._run(loops))
        self._main.add_done_callback(self._on_main_done)
        if self.processes is not None:
            # not a task stop() waits for: a stop while they start need not wait for them
            self._starting = asyncio.create_task(self.processes.start_or_stay_in_threads())

    async def add_tenant(self, tenant: str, consumers: dict[Priority, str]) -> None:
        """Also fetch `tenant`'s jobs (from its stream), taking turns with the others."""
        await self._feeds.add_tenant(tenant, consumers)

    async def remove_tenant(self, tenant: str) -> None:
        """Stop fetching `tenant`'s jobs (its stream is gone); jobs in hand still finish."""
        await self._feeds.remove_tenant(tenant)

    async def _run(self, loops: list[Any]) -> None:
        await asyncio.gather(*loops)

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failed = task.exception()
            log.error("consumer loop died: %r", self.failed, exc_info=self.failed)

    # -- fetch and admit -------------------------------------------------------------

    def _room_for(self, key: FeedKey) -> int:
        """Jobs to fetch now: none while jobs of this priority (or higher) wait for pixels."""
        priority, source = key
        if self._budget.waiting_ahead(high=priority is Priority.HIGH):
            return 0
        buffered = self._batcher.pending(priority, source) + self._admitting.get(key, 0)
        total = self._window + 3 * self._settings.max_batch - self._held.get(source, 0)
        return min(self._window - buffered, total)

    def _more_expected(self) -> bool:
        """Jobs are being prepared, or the stream said more were pending at last delivery."""
        return any(self._admitting.values()) or any(self._pending_hint.values())

    def _admit(self, key: FeedKey, msg: Msg) -> None:
        priority, source = key
        with contextlib.suppress(Exception):
            self._pending_hint[key] = int(msg.metadata.num_pending or 0)
        position = stream_position(msg)
        held = self._by_sequence.get(position)
        if held is not None and not held.settled:
            return  # a redelivery of a job this worker still holds: that copy settles it
        ctx = context_from_headers(msg.headers)
        span = _tracer.start_span("surge.job", context=ctx, kind=trace.SpanKind.CONSUMER)
        job = InFlightJob(msg=msg, priority=priority, span=span, context=ctx, source=source)
        self._in_flight.add(job)
        self._held[source] = self._held.get(source, 0) + 1
        self._by_sequence[position] = job
        self._settler.metrics.in_flight.set(len(self._in_flight))
        if self._stopping.is_set():
            self._spawn(self._settler.hand_back(job))
            return
        if self._admission.fast_path(job):
            try:
                if self._admission.prepare_now(job):
                    self._batcher.put(priority, job, source)
                    return
            except JobError as exc:
                self._spawn(self._completion.fail(job, exc))
                return
            except Exception:
                log.exception("fast preparation failed; retrying on the full path")
        self._admitting[key] = self._admitting.get(key, 0) + 1
        self._spawn(self._prepare(job))

    async def _prepare(self, job: InFlightJob) -> None:
        """The full preparation; the job is then ready for a batch, or settled."""
        try:
            await self._admission.prepare(job)
        except JobError as exc:
            await self._completion.fail(job, exc)
        except Exception as exc:
            log.exception("preparing job failed")
            await self._completion.guarded(job, exc)
        finally:
            self._admitting[(job.priority, job.source)] -= 1
        if job.settled:
            return
        if self._stopping.is_set():
            await self._settler.hand_back(job)
        elif job.cancelled:  # while it waited (for its screen): its canceller answered it
            await self._settler.cancelled(job)
        elif job.sample is None:
            await self._settler.abandon(job)
        else:
            self._batcher.put(job.priority, job, job.source)

    # -- batch and infer ----------------------------------------------------------------

    async def _batch_loop(self) -> None:
        """Form batches and run up to `runners` of them at once on the shared session."""
        free = asyncio.Semaphore(self._runners)
        limit: int | None = 1  # the first: one job, the result out soonest
        while True:
            await free.acquire()
            batch = await self._batcher.take(limit)
            limit = None
            if not batch:
                free.release()
                return
            self._room.set()
            if self._model.fast:  # the run is cheaper than a task: no need to overlap it
                await self._run_guarded(batch, free)
            else:
                self._spawn(self._run_guarded(batch, free))

    async def _run_guarded(self, batch: list[InFlightJob], free: asyncio.Semaphore) -> None:
        try:
            await self._run_batch(batch)
        except Exception as exc:
            log.exception("batch failed unexpectedly")
            for job in batch:
                if not job.settled:
                    self._spawn(self._completion.guarded(job, exc))
        finally:
            free.release()

    async def _run_batch(self, batch: list[InFlightJob]) -> None:
        batch, late = split_expired(batch, datetime.now(UTC))
        for job, error in late:  # never started: told why
            self._spawn(self._completion.fail(job, error))
        for job in [job for job in batch if job.cancelled]:  # never started: no work done
            batch.remove(job)
            self._spawn(self._settler.cancelled(job))
        for model, part in self.models.split(batch):  # a batch never mixes versions
            await self._run_on(model, part)

    async def _run_on(self, model: BatchModel, batch: list[InFlightJob]) -> None:
        if not batch:
            return
        samples = [job.ready_sample for job in batch]
        start_ns = wall_ns()
        self._running[id(batch)] = start_ns
        self.busy.begin()
        for job in batch:
            job.running_since = start_ns
            if self._events is not None:
                self._events.emit(job.job_id, job.tenant, JobState.RUNNING)
        try:
            out = await run_in(self._infer_pool, model.fast, model.run_batch, samples)
        except Exception as exc:
            self._spawn(self._completion.split_after_failure(batch, exc, self._infer_pool))
            return
        finally:
            del self._running[id(batch)]
            self.busy.end()
        self._spawn(self._completion.complete(batch, out, start_ns, wall_ns()))

    async def infer_direct(self, request: JobRequest) -> tuple[dict[str, Output], Timings]:
        """One job outside the queue (HTTP): same decode, model and postprocess."""
        return await self._direct.run(request)

    def stuck_for(self) -> float:
        """Seconds the current inference has been running (0 when idle)."""
        started = min(self._running.values(), default=None)
        return (wall_ns() - started) / 1e9 if started is not None else 0.0

    # -- shutdown -------------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """Drain: close the feeds, hand back unstarted jobs, finish the batch in hand."""
        timeout = self._settings.drain_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(deadline - time.monotonic(), 0.1)

        self._stopping.set()
        self._room.set()
        await self._feeds.stop(left())
        self._batcher.close()
        for job in self._batcher.drain():
            await self._settler.hand_back(job)
        if self._main is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._main), left())
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=left())
        for job in self._batcher.drain():
            await self._settler.hand_back(job)
        for job in list(self._in_flight):
            if not job.settled:
                with contextlib.suppress(Exception):
                    await self._settler.hand_back(job)
        if self._main is not None and not self._main.done():
            self._main.cancel()
        if self._cache is not None:
            await self._cache.stop(left())
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        if self.processes is not None:
            self.processes.close()
        log.info("drained: %d jobs completed", self.completed)
