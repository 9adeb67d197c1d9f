"""One job from its message to a batch: `Admission` parses, replays, reads, decodes, or
settles it early (the job itself is an `InFlightJob`, in `inflight`).

Admission parses the message, answers a redelivered job from the result store, reads a
blob input, answers it from the result cache when the worker has one and the same input
was done before, reads the image header, takes from the worker's `PixelBudget` the pixels its
decode and postprocessing will hold, decodes (reduced for the task where it allows),
preprocesses and, when the worker has a screen (`screen`), screens the image. The pixels
stay taken until the job settles (`release`), less what the decode needed beyond the image
it keeps. A first delivery with a small inline image takes the fast path, synchronously on
the event loop (cheaper than a task and a thread hop) when its pixels are free at once and
the worker has no cache or screen; everything else goes through `prepare()`, with decoding
in the CPU pool, or in the worker's CPU processes once they are up (`cpuprocs`), and so
does a small file that turns out to hold a large picture.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Span
from PIL import Image

from function.contract.errors import BadInput, ErrorCode, JobError
from function.contract.parse import parse_job
from function.contract.screen import input_sha256
from function.contract.settings import (
    JOBS_STREAM,
    Header,
    Priority,
    WorkerSettings,
    tenant_of_stream,
)
from function.contract.wire import JobRequest
from function.engine.batchmodel import BatchModel, run_in
from function.engine.budget import PixelBudget
from function.engine.cpuprocs import CpuProcesses, NoRoom
from function.engine.inflight import InFlightJob
from function.engine.ratelimit import TenantRates
from function.engine.screen import Screening
from function.models.imaging import PendingImage, open_image
from function.telemetry import METRICS
from function.transport.cache import ResultCache
from function.transport.storage import ResultStore

if TYPE_CHECKING:
    from function.engine.screen_queue import ScreenGate
    from function.engine.settle import Settler

__all__ = ["SMALL_INPUT_BYTES", "Admission"]


def _note_screened_input(job: InFlightJob, data: bytes) -> bool:
    """For a screen job (`Surge-Screen-For`), note the digest of the input it scores, which
    its result names; whether it is one."""
    if Header.SCREEN_FOR not in (job.msg.headers or {}):
        return False
    job.input_sha256 = input_sha256(data)
    return True


SMALL_INPUT_BYTES = 32 * 1024
FAST_PATH_PIXELS = 512 * 512  # decoded on the event loop only up to this size
_tracer = trace.get_tracer("surge")


class Admission:
    """Prepares jobs for one consumer; decoded pixels are admitted through `budget`."""

    gate: ScreenGate | None = None  # screening through the queue (`SURGE_SCREEN_VIA`)
    processes: CpuProcesses | None = None  # decode and preprocess there once it is ready

    def __init__(
        self,
        model: BatchModel,
        results: ResultStore,
        settler: Settler,
        settings: WorkerSettings,
        cpu_pool: ThreadPoolExecutor,
        budget: PixelBudget,
        stopping: asyncio.Event,
        rates: TenantRates | None = None,
        cache: ResultCache | None = None,
        screening: Screening | None = None,
    ) -> None:
        self._model = model
        self._cache = cache
        self._screening = screening
        self._rates = rates if rates is not None else TenantRates()
        self._results = results
        self._settler = settler
        self._settings = settings
        self._cpu_pool = cpu_pool
        self._budget = budget
        self._stopping = stopping
        self.cacheable: Callable[[str], bool] = lambda job_id: True  # a canary's are not

    def _decode(self, pending: PendingImage) -> tuple[Image.Image, np.ndarray]:
        image = pending.decode()
        return image, self._model.preprocess(image)

    def _decode_timed(self, pending: PendingImage) -> tuple[Image.Image, np.ndarray, int]:
        """`_decode`, and the nanoseconds it took."""
        started = time.perf_counter_ns()
        image, sample = self._decode(pending)
        return image, sample, time.perf_counter_ns() - started

    def _reserve(self, outputs: tuple[str, ...], pending: PendingImage) -> tuple[int, int]:
        """(pixels to take before decoding, those postprocessing needs beyond the image).

        The decode's peak and the decoded image plus postprocessing never coexist, so a
        job takes the larger of the two.
        """
        later = self._model.postprocess_pixels(pending.size, outputs)
        size = self._model.decode_size(outputs)
        if self._screening is not None:  # the screen sees the same decoded image
            size = self._screening.decode_size(size)
        peak = pending.plan(size)
        return max(peak, pending.decoded + later), later

    def _open(self, data: bytes, content_type: str | None) -> PendingImage:
        return open_image(data, content_type, max_pixels=self._settings.max_pixels)

    async def _admit(
        self, data: bytes, content_type: str | None, outputs: tuple[str, ...], *, high: bool
    ) -> tuple[PendingImage, int, int] | None:
        """Read the header (off the loop when the file is large) and wait for the pixels:
        (the image, pixels taken, those postprocessing keeps), or None if the worker
        stops first."""
        pending: PendingImage = await run_in(
            self._cpu_pool, len(data) <= SMALL_INPUT_BYTES, self._open, data, content_type
        )
        pixels, later = self._reserve(outputs, pending)
        if not await self._budget.acquire(pixels, high=high, abort=self._stopping):
            return None
        return pending, pixels, later

    async def decode_admitted(
        self, data: bytes, content_type: str | None, outputs: tuple[str, ...]
    ) -> tuple[Image.Image, np.ndarray, int]:
        """Decode an input outside the queue (HTTP) under the same pixel budget, ahead of
        queued jobs; the caller releases the returned pixels when done."""
        admitted = await self._admit(data, content_type, outputs, high=True)
        if admitted is None:
            raise JobError(ErrorCode.NOT_READY, "the worker is stopping")
        pending, pixels, _ = admitted
        try:
            image, sample = await run_in(self._cpu_pool, False, self._decode, pending)
        except BaseException:
            self._budget.release(pixels)
            raise
        return image, sample, pixels

    def _hold(self, job: InFlightJob, decoded: int, later: int) -> None:
        """Keep the decoded image's pixels and `later`; give back the rest of the decode."""
        kept = decoded + later
        if kept < job.pixels:
            self._budget.release(job.pixels - kept)
            job.pixels = kept

    def release(self, job: InFlightJob) -> None:
        """Give back the pixels and the CPU process slot `job` holds (once it settles);
        safe to call again."""
        if job.shared is not None and self.processes is not None:
            job.sample = None  # a view of the slot
            self.processes.discard(job.shared)
            job.shared = None
        if job.pixels:
            self._budget.release(job.pixels)
            job.pixels = 0

    def parse(self, job: InFlightJob) -> JobRequest:
        """Parse the message (raises `BadInput`) and record the request on the job."""
        meta = job.msg.metadata
        request = parse_job(
            job.msg.subject,
            job.msg.headers,
            job.msg.data,
            stream=meta.stream or JOBS_STREAM,
            sequence=int(meta.sequence.stream or 0),
            max_payload=self._settings.max_payload_bytes,
            webhook_hosts=self._settings.webhook_allow_hosts,
        )
        job.request = request
        job.span.set_attribute("surge.job_id", request.job_id)
        if request.webhook is not None and self._settings.webhook_secret is None:
            raise BadInput(
                ErrorCode.BAD_ENVELOPE,
                f"{Header.WEBHOOK}: this worker sends no webhooks (no SURGE_WEBHOOK_SECRET)",
            )
        return request

    def check_rate(self, job: InFlightJob) -> None:
        """Raise `quota_exceeded` for a tenant's job past its stream's `max_rate`."""
        meta = job.msg.metadata
        tenant = tenant_of_stream(meta.stream or "")
        if tenant is None or tenant != job.tenant:
            return
        if self._rates.over(tenant, int(meta.sequence.stream or 0), job.published_ns / 1e9):
            limit = self._rates.limit(tenant)
            message = f"tenant {tenant} is over its max_rate of {limit:g} jobs/s"
            raise JobError(ErrorCode.QUOTA_EXCEEDED, message)

    def fast_path(self, job: InFlightJob) -> bool:
        """A first delivery with a small payload: prepare it synchronously (never with a
        result cache, whose lookup waits for the server, nor a screen, a model run)."""
        small = len(job.msg.data) <= SMALL_INPUT_BYTES
        screened = self._screening is not None or self.gate is not None
        return job.attempts == 1 and small and self._cache is None and not screened

    async def screen(self, image: Image.Image, parent: Span) -> None:
        """Run the worker's screen on a decoded image, if it has one: raises
        `JobError(content_rejected)` for an image its rule rejects."""
        if self._screening is not None:
            await self._screening.check(image, self._cpu_pool, parent)

    def prepare_now(self, job: InFlightJob) -> bool:
        """Fast path; False when the job must go async: a blob input, a picture over
        `FAST_PATH_PIXELS`, or pixels not free at once."""
        request = self.parse(job)
        self.check_rate(job)
        if request.image is None:
            return False
        _note_screened_input(job, request.image)
        job.outputs = self._model.check_outputs(request.outputs)
        if not job.span.is_recording():
            return self._decode_now(job, request.image, request.content_type)
        with _tracer.start_as_current_span("decode", context=trace.set_span_in_context(job.span)):
            return self._decode_now(job, request.image, request.content_type)

    def _decode_now(self, job: InFlightJob, data: bytes, content_type: str | None) -> bool:
        limit = min(self._settings.max_pixels, FAST_PATH_PIXELS)
        try:
            pending = open_image(data, content_type, max_pixels=limit)
        except BadInput as exc:
            if exc.code is ErrorCode.TOO_MANY_PIXELS and limit < self._settings.max_pixels:
                return False  # small file, big picture: decode it off the loop
            raise
        pixels, later = self._reserve(job.outputs, pending)
        if not self._budget.try_acquire(pixels, high=job.priority is Priority.HIGH):
            return False
        job.pixels = pixels
        try:
            image, job.sample, job.prep_ns = self._decode_timed(pending)
            job.image = image
        except BadInput:
            raise  # settled as an error, which releases the pixels
        except Exception:
            self.release(job)  # the full path takes them again
            raise
        self._hold(job, image.width * image.height, later)
        return True

    async def prepare(self, job: InFlightJob) -> None:
        """Full path: dedupe a redelivery, load a blob input, wait for the pixels, decode
        in the pool. Returns with `job.sample` unset if the worker stops meanwhile."""
        rate_checked = job.request is not None  # by `prepare_now`, which parsed it
        request = job.request or self.parse(job)
        if job.attempts > 1:
            METRICS.redeliveries.labels(self._settings.function).inc()
            stored = await self._results.lookup(request.job_id, request.tenant)
            if stored is not None:
                await self._settler.replay(job, stored)
                return
        if not rate_checked:
            self.check_rate(job)
        job.outputs = self._model.check_outputs(request.outputs)
        data = request.image
        if data is None and request.image_ref is not None:
            data = await self._results.fetch_input(request.image_ref, request.tenant)
        assert data is not None
        screen_job = _note_screened_input(job, data)
        if (
            not screen_job
            and self.gate is not None
            and not await self.gate.passes(job, request, data)
        ):
            return  # the worker is stopping, or the job was cancelled meanwhile
        if self._cache is not None and await self._answer_cached(job, data):
            return
        span = _tracer.start_span("decode", context=trace.set_span_in_context(job.span))
        with trace.use_span(span, end_on_exit=True):
            high = job.priority is Priority.HIGH
            admitted = await self._admit(data, request.content_type, job.outputs, high=high)
            if admitted is None:
                return
            pending, pixels, later = admitted
            job.pixels = pixels
            if self._stopping.is_set():
                return
            span.set_attribute("surge.decoded_pixels", pixels)
            if await self._decode_in_process(job, data, later):
                return
            decoded = await run_in(self._cpu_pool, False, self._decode_timed, pending)
            image, job.sample, job.prep_ns = decoded
            job.image = image
            self._hold(job, image.width * image.height, later)
        if self._screening is not None:
            await self.screen(image, job.span)

    async def _decode_in_process(self, job: InFlightJob, data: bytes, later: int) -> bool:
        """Decode and preprocess in a CPU process when they are up (a worker that screens
        has none: `cpu_processes`); False: do it here instead."""
        processes = self.processes
        if processes is None or not processes.ready:
            return False
        assert job.request is not None
        target = self._model.decode_size(job.outputs)
        try:
            job.shared, job.sample = await processes.prepare(data, job.request.content_type, target)
        except NoRoom:
            return False
        job.prep_ns = job.shared.prepared.prep_ns
        if job.settled:  # cancelled meanwhile: nothing else gives the slot back
            self.release(job)
            return True
        self._hold(job, job.shared.pixels, later)
        return True

    async def _answer_cached(self, job: InFlightJob, data: bytes) -> bool:
        """Answer `job` from the result cache when its input was done before (True)."""
        assert self._cache is not None and job.request is not None
        if not self.cacheable(job.job_id):
            return False
        small = len(data) <= SMALL_INPUT_BYTES
        key = await run_in(self._cpu_pool, small, self._cache.key, job.tenant, job.outputs, data)
        job.cache_key = key
        stored = await self._cache.lookup(key, job.tenant)
        if stored is None:
            return False
        await self._settler.answer_cached(job, stored)
        return True
