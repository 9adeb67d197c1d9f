"""Admission: turn a fetched message into a job ready for a batch, or settle it early.

Parse the message, answer a redelivered job from the result store, read a blob input,
decode and preprocess. A first delivery with a small inline image takes the fast path,
synchronously on the event loop (cheaper than a task and a thread hop); everything else
goes through `prepare()`, with decoding in the CPU pool (so does a small file that
turns out to hold a large picture).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from opentelemetry import trace
from PIL import Image

from function.errors import BadInput, ErrorCode
from function.imaging import decode_image
from function.inflight import InFlightJob
from function.jobs import JobRequest, parse_job
from function.results import ResultStore
from function.settings import JOBS_STREAM, WorkerSettings
from function.settle import Settler
from function.telemetry import METRICS

__all__ = ["SMALL_INPUT_BYTES", "Admission", "run_in"]

SMALL_INPUT_BYTES = 32 * 1024
FAST_PATH_PIXELS = 512 * 512  # decoded on the event loop only up to this size
_tracer = trace.get_tracer("surge")


async def run_in(pool: ThreadPoolExecutor, inline: bool, fn: Any, *args: Any) -> Any:
    """Run `fn` in `pool`, or right here when that is cheaper than the thread hop."""
    if inline:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


class Admission:
    """Prepares jobs for one consumer."""

    def __init__(
        self,
        model: Any,
        results: ResultStore,
        settler: Settler,
        settings: WorkerSettings,
        cpu_pool: ThreadPoolExecutor,
    ) -> None:
        self._model = model
        self._results = results
        self._settler = settler
        self._settings = settings
        self._cpu_pool = cpu_pool

    def decode(
        self, data: bytes, content_type: str | None, max_pixels: int | None = None
    ) -> tuple[Image.Image, np.ndarray]:
        limit = self._settings.max_pixels if max_pixels is None else max_pixels
        image = decode_image(data, content_type, max_pixels=limit)
        return image, self._model.preprocess(image)

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
        )
        job.request = request
        job.span.set_attribute("surge.job_id", request.job_id)
        return request

    def fast_path(self, job: InFlightJob) -> bool:
        """A first delivery with a small payload: prepare it synchronously."""
        return job.attempts == 1 and len(job.msg.data) <= SMALL_INPUT_BYTES

    def prepare_now(self, job: InFlightJob) -> bool:
        """Fast path; False when the job needs I/O (a blob input) and must go async."""
        request = self.parse(job)
        if request.image is None:
            return False
        job.outputs = self._model.check_outputs(request.outputs)
        limit = min(self._settings.max_pixels, FAST_PATH_PIXELS)
        with _tracer.start_as_current_span("decode", context=trace.set_span_in_context(job.span)):
            try:
                job.image, job.sample = self.decode(request.image, request.content_type, limit)
            except BadInput as exc:
                if exc.code is ErrorCode.TOO_MANY_PIXELS and limit < self._settings.max_pixels:
                    return False  # small file, big picture: decode it off the loop
                raise
        return True

    async def prepare(self, job: InFlightJob) -> None:
        """Full path: dedupe a redelivery, load a blob input, decode in the pool."""
        request = job.request or self.parse(job)
        if job.attempts > 1:
            METRICS.redeliveries.labels(self._settings.function).inc()
            stored = await self._results.lookup(request.job_id)
            if stored is not None:
                await self._settler.replay(job, stored)
                return
        job.outputs = self._model.check_outputs(request.outputs)
        data = request.image
        if data is None and request.image_ref is not None:
            data = await self._results.fetch_input(request.image_ref)
        assert data is not None
        span = _tracer.start_span("decode", context=trace.set_span_in_context(job.span))
        with trace.use_span(span, end_on_exit=True):
            job.image, job.sample = await run_in(
                self._cpu_pool, False, self.decode, data, request.content_type
            )
