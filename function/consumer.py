"""The JetStream pull loop: fetch (high before normal), prepare, batch, infer, settle.

Stages, all in one event loop; blocking work runs in thread pools:

1. one pull feed per priority keeps at most `max_batch` admitted-but-unbatched jobs,
   each handed over the moment it arrives;
2. admission parses, answers redeliveries from the result store, reads blob inputs,
   and decodes + preprocesses off the loop;
3. the batch loop takes up to `max_batch` ready jobs (high first, waiting at most
   `max_batch_wait_ms` to fill) and runs one inference in a dedicated thread;
4. completion postprocesses, stores the result, replies and acks, while the next batch
   already runs.

`stop()` drains: stop fetching, hand back (nak) what has not started, finish the batch
in hand, publish, ack; whatever is still unsettled at the drain timeout is handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import trace
from PIL import Image

from function.admission import SMALL_INPUT_BYTES, Admission, run_in
from function.batcher import PriorityBatcher
from function.errors import ErrorCode, JobError, TransientError
from function.inflight import InFlightJob, wall_ns
from function.jobs import JobRequest, ModelInfo, Output, Timings
from function.pull import PullFeed
from function.results import ResultStore
from function.settings import JOBS_STREAM, Priority, WorkerSettings
from function.settle import Settler
from function.telemetry import METRICS, bind, context_from_headers

__all__ = ["BatchModel", "JobConsumer"]

log = logging.getLogger("surge.consumer")
_tracer = trace.get_tracer("surge")


SMALL_IMAGE_PIXELS = 64 * 64 * 16


class BatchModel(Protocol):
    """What the consumer needs from a loaded model; `fast` when a run costs less than a
    thread hop (measured at warmup), so it runs on the event loop."""

    info: ModelInfo
    fast: bool

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]: ...
    def preprocess(self, image: Image.Image) -> np.ndarray: ...
    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray: ...
    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]: ...


class JobConsumer:
    """Consumes one function's jobs from both priority consumers until stopped."""

    def __init__(
        self,
        nc: NATS,
        consumers: dict[Priority, str],
        model: BatchModel,
        results: ResultStore,
        settings: WorkerSettings,
    ) -> None:
        self._nc = nc
        self._consumers = consumers
        self._model = model
        self.model_info = model.info
        self._results = results
        self._settings = settings
        self._batcher: PriorityBatcher[InFlightJob] = PriorityBatcher(
            settings.max_batch, settings.max_batch_wait_ms / 1000, self._more_expected
        )
        self._pending_hint: dict[Priority, int] = {p: 0 for p in Priority}
        self._in_flight: set[InFlightJob] = set()
        self._admitting: dict[Priority, int] = {p: 0 for p in Priority}
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="surge-infer")
        self._cpu_pool = ThreadPoolExecutor(2, thread_name_prefix="surge-cpu")
        self._settler = Settler(results, settings, model.info, self._forget)
        self._admission = Admission(model, results, self._settler, settings, self._cpu_pool)
        self._main: asyncio.Task[None] | None = None
        self._feeds: dict[Priority, PullFeed] = {}
        self.completed = 0
        self.first_job_at: float | None = None
        self.batch_sizes: list[int] = []

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _forget(self, job: InFlightJob) -> None:
        self._in_flight.discard(job)
        METRICS.in_flight.labels(self._settings.function).set(len(self._in_flight))
        self._room.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Open one pull feed per priority and start fetching."""
        for priority, name in self._consumers.items():
            feed = PullFeed(
                self._nc,
                JOBS_STREAM,
                name,
                lambda msg, p=priority: self._admit(p, msg),  # type: ignore[misc]
                expires=self._settings.fetch_timeout_s,
            )
            await feed.start()
            self._feeds[priority] = feed
        fetchers = [self._fetch_loop(p, feed) for p, feed in self._feeds.items()]
        self._main = asyncio.create_task(self._run(fetchers))

    async def _run(self, fetchers: list[Any]) -> None:
        await asyncio.gather(
            *fetchers, self._batch_loop(), self._progress_loop(), return_exceptions=False
        )

    # -- fetch and admit -------------------------------------------------------------

    def _buffered(self, priority: Priority) -> int:
        return self._batcher.pending(priority) + self._admitting[priority]

    async def _fetch_loop(self, priority: Priority, feed: PullFeed) -> None:
        """Keep a pull request open for as many jobs as this priority has room for."""
        poll = self._settings.fetch_timeout_s
        while not self._stopping.is_set():
            room = self._settings.max_batch - self._buffered(priority)
            if room <= 0:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), poll)
                continue
            try:
                await feed.request(room)
            except Exception:  # connection trouble: the client reconnects, try again
                log.exception("pull request failed on %s", priority.value)
                await asyncio.sleep(poll)
                continue
            await feed.wait_ended(poll)

    def _more_expected(self) -> bool:
        """Jobs are being prepared, or the stream said more were pending at last delivery."""
        return any(self._admitting.values()) or any(self._pending_hint.values())

    def _admit(self, priority: Priority, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            self._pending_hint[priority] = int(msg.metadata.num_pending or 0)
        ctx = context_from_headers(msg.headers)
        span = _tracer.start_span("surge.job", context=ctx, kind=trace.SpanKind.CONSUMER)
        job = InFlightJob(msg=msg, priority=priority, span=span, context=ctx)
        self._in_flight.add(job)
        METRICS.in_flight.labels(self._settings.function).set(len(self._in_flight))
        if self._admission.fast_path(job) and not self._stopping.is_set():
            try:
                if self._admission.prepare_now(job):
                    self._batcher.put(priority, job)
                    return
            except JobError as exc:
                self._spawn(self._settler.fail(job, exc))
                return
            except Exception:
                log.exception("fast preparation failed; retrying on the full path")
        self._admitting[priority] += 1
        self._spawn(self._prepare(job))

    async def _prepare(self, job: InFlightJob) -> None:
        """The full preparation; the job is then ready for a batch, or settled."""
        try:
            await self._admission.prepare(job)
        except JobError as exc:
            await self._settler.fail(job, exc)
        except Exception as exc:
            log.exception("preparing job failed")
            await self._settler.retry_or_dead_letter(job, exc)
        finally:
            self._admitting[job.priority] -= 1
            if not job.settled and not self._stopping.is_set():
                self._batcher.put(job.priority, job)
            elif not job.settled:
                await self._settler.hand_back(job)

    # -- batch, infer, complete --------------------------------------------------------

    async def _batch_loop(self) -> None:
        while True:
            batch = await self._batcher.take()
            if not batch:
                return
            self._room.set()
            batch = await self._drop_expired(batch)
            if not batch:
                continue
            start_ns = wall_ns()
            samples = [job.sample for job in batch if job.sample is not None]
            try:
                out = await run_in(
                    self._infer_pool, self._model.fast, self._model.run_batch, samples
                )
            except Exception as exc:
                self._spawn(self._split_after_failure(batch, exc))
                continue
            self._spawn(self._complete(batch, out, start_ns, wall_ns()))

    async def _drop_expired(self, batch: list[InFlightJob]) -> list[InFlightJob]:
        now = datetime.now(UTC)
        live = []
        for job in batch:
            deadline = job.request.deadline if job.request else None
            if deadline is not None and deadline < now:
                error = JobError(
                    ErrorCode.DEADLINE_EXCEEDED, f"deadline {deadline.isoformat()} passed"
                )
                self._spawn(self._settler.fail(job, error))
            else:
                live.append(job)
        return live

    async def _split_after_failure(self, batch: list[InFlightJob], error: Exception) -> None:
        """A failed batch is retried one job at a time; a failing job alone is transient."""
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            await self._settler.retry_or_dead_letter(batch[0], error)
            return
        log.warning("batch of %d failed (%s); retrying one by one", len(batch), error)
        for job in batch:
            assert job.sample is not None
            start_ns = wall_ns()
            try:
                out = await loop.run_in_executor(
                    self._infer_pool, self._model.run_batch, [job.sample]
                )
            except Exception as exc:
                await self._settler.retry_or_dead_letter(job, exc)
                continue
            await self._complete([job], out, start_ns, wall_ns())

    async def _complete(
        self, batch: list[InFlightJob], out: np.ndarray, start_ns: int, end_ns: int
    ) -> None:
        size = len(batch)
        infer_ms = (end_ns - start_ns) / 1e6
        function = self._settings.function
        METRICS.batch_size.labels(function).observe(size)
        METRICS.inference.labels(function).observe(infer_ms / 1000)
        self.batch_sizes.append(size)
        for index, job in enumerate(batch):
            parent = trace.set_span_in_context(job.span)
            _tracer.start_span("batch wait", context=parent, start_time=job.fetched_ns).end(
                start_ns
            )
            infer = _tracer.start_span("inference", context=parent, start_time=start_ns)
            infer.set_attribute("surge.batch_size", size)
            infer.end(end_ns)
            queued_ms = (start_ns - job.published_ns) / 1e6
            METRICS.queue_wait.labels(function).observe(max(queued_ms, 0.0) / 1000)
            timings = Timings(queued_ms=queued_ms, batch_size=size, inference_ms=infer_ms)
            with bind(job_id=job.job_id, trace_id=job.trace_id):
                try:
                    assert job.image is not None
                    small = (
                        self._model.fast
                        and job.image.width * job.image.height <= SMALL_IMAGE_PIXELS
                    )
                    outputs = await run_in(
                        self._cpu_pool,
                        small,
                        self._model.postprocess,
                        out[index],
                        job.image,
                        job.outputs,
                    )
                    await self._settler.succeed(job, outputs, timings)
                    self.completed += 1
                    self.first_job_at = self.first_job_at or time.time()
                except JobError as exc:
                    await self._settler.fail(job, exc, timings)
                except (TransientError, Exception) as exc:
                    log.exception("completing job failed")
                    if not job.settled:
                        await self._settler.retry_or_dead_letter(job, exc)

    async def infer_direct(self, request: JobRequest) -> tuple[dict[str, Output], Timings]:
        """One job outside the queue (HTTP): same decode, model and postprocess."""
        outputs_wanted = self._model.check_outputs(request.outputs)
        data = request.image
        if data is None and request.image_ref is not None:
            data = await self._results.fetch_input(request.image_ref)
        assert data is not None
        small = len(data) <= SMALL_INPUT_BYTES
        image, sample = await run_in(
            self._cpu_pool, small, self._admission.decode, data, request.content_type
        )
        start_ns = wall_ns()
        out = await run_in(self._infer_pool, self._model.fast, self._model.run_batch, [sample])
        end_ns = wall_ns()
        outputs = await run_in(
            self._cpu_pool, False, self._model.postprocess, out[0], image, outputs_wanted
        )
        self.completed += 1
        infer_ms = (end_ns - start_ns) / 1e6
        METRICS.inference.labels(self._settings.function).observe(infer_ms / 1000)
        return outputs, Timings(batch_size=1, inference_ms=infer_ms)

    async def _progress_loop(self) -> None:
        """Tell JetStream that long-running jobs are still being worked on."""
        period = self._settings.ack_wait_s / 3
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), period)
            now = wall_ns()
            for job in list(self._in_flight):
                if not job.settled and now - job.fetched_ns > period * 1e9:
                    with contextlib.suppress(Exception):
                        await job.msg.in_progress()

    # -- shutdown -------------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """Drain: stop fetching, hand back unstarted jobs, finish the batch in hand."""
        timeout = self._settings.drain_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._room.set()
        self._batcher.close()
        for job in self._batcher.drain():
            await self._settler.hand_back(job)
        if self._main is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._main, max(deadline - time.monotonic(), 0.1))
        for feed in self._feeds.values():
            await feed.stop()  # jobs that still arrive on an open request are handed back
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(deadline - time.monotonic(), 0.1))
        for job in self._batcher.drain():
            await self._settler.hand_back(job)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(deadline - time.monotonic(), 0.1))
        for job in list(self._in_flight):
            if not job.settled:
                with contextlib.suppress(Exception):
                    await self._settler.hand_back(job)
        self._infer_pool.shutdown(wait=False, cancel_futures=True)
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
        log.info("drained: %d jobs completed", self.completed)
