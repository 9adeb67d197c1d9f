"""The worker: one process that loads a model and consumes one function's jobs.

    worker = Worker(WorkerSettings(function="remove-bg"))
    await worker.start()        # connect, create streams/consumers, load + warm the model
    ...
    await worker.stop()         # drain: nothing lost

`run_worker()` adds signal handling (SIGTERM/SIGINT -> drain; a second signal exits).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import numpy as np
from nats.aio.client import Client as NATS
from PIL import Image

from function.consumer import JobConsumer
from function.heartbeat import Heartbeat, HeartbeatPublisher, WorkerState
from function.jobs import ModelInfo, Output
from function.models import LoadedModel, load_model, load_task
from function.poison import PoisonSweeper
from function.results import ResultStore
from function.settings import WorkerSettings
from function.telemetry import METRICS
from function.topology import ensure_topology

__all__ = ["ModelAdapter", "Worker", "run_worker"]

log = logging.getLogger("surge.worker")


def process_start_time() -> float:
    """When this process started (Unix time), from /proc on Linux; else module import time."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks since boot
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


PROCESS_START = process_start_time()
FAST_RUN_MS = 0.5  # a model run shorter than this is cheaper inline than in a thread


class ModelAdapter:
    """Presents a `LoadedModel` as the consumer's `BatchModel`."""

    def __init__(self, loaded: LoadedModel, warmup_ms: dict[int, float]) -> None:
        self.loaded = loaded
        self.info: ModelInfo = loaded.info
        self.fast = bool(warmup_ms) and max(warmup_ms.values()) < FAST_RUN_MS

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        return self.loaded.task.check_outputs(requested)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.loaded.task.preprocess(image)

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        return self.loaded.run_batch(samples)

    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        return self.loaded.task.postprocess(row, image, outputs)


def load_and_warm(settings: WorkerSettings) -> tuple[LoadedModel, dict[int, float]]:
    """Fetch, prepare, create the session and run warmup at each batch size (blocking)."""
    task = load_task(settings.function, settings.task)
    loaded = load_model(
        task,
        cache_dir=settings.model_dir,
        model_path=settings.model_path,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
    )
    sizes = settings.warmup_batch_sizes
    if sizes is None:
        sizes = sorted({1, effective_max_batch(settings, loaded)})
    return loaded, loaded.warmup(sizes)


def effective_max_batch(settings: WorkerSettings, loaded: LoadedModel) -> int:
    """`max_batch`, capped by a model whose batch axis is fixed."""
    return min(settings.max_batch, loaded.max_batch or settings.max_batch)


class Worker:
    """Connects, loads the model, consumes; `ready` once warm and attached."""

    def __init__(self, settings: WorkerSettings, *, name: str | None = None) -> None:
        self.settings = settings
        self.worker_id = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = datetime.fromtimestamp(PROCESS_START, UTC)
        self.state = WorkerState.WARMING
        self.ready_at: datetime | None = None
        self.nc: NATS | None = None
        self.consumer: JobConsumer | None = None
        self.model: LoadedModel | None = None
        self.warmup_ms: dict[int, float] = {}
        self._sweeper: PoisonSweeper | None = None
        self._heartbeat: HeartbeatPublisher | None = None

    @property
    def ready(self) -> bool:
        return self.state is WorkerState.READY

    async def start(self) -> None:
        """Connect and create the topology, load + warm the model, then start consuming."""
        settings = self.settings
        self.nc = await nats.connect(
            settings.nats_url, name=f"surge-worker-{self.worker_id}", max_reconnect_attempts=-1
        )
        js = self.nc.jetstream()
        self._heartbeat = HeartbeatPublisher(
            self.nc, settings.function, self.snapshot, settings.heartbeat_interval_s
        )
        self._heartbeat.start()
        topology = await ensure_topology(js, settings)
        model, self.warmup_ms = await asyncio.to_thread(load_and_warm, settings)
        self.model = model
        if effective_max_batch(settings, model) != settings.max_batch:
            log.warning("model takes batches of at most %s: max_batch capped", model.max_batch)
            capped = effective_max_batch(settings, model)
            settings = settings.model_copy(update={"max_batch": capped})
        results = ResultStore(
            self.nc, js, topology.blobs, inline_limit=settings.inline_output_limit
        )
        self.consumer = JobConsumer(
            self.nc, topology.consumers, ModelAdapter(model, self.warmup_ms), results, settings
        )
        self._sweeper = PoisonSweeper(self.nc, js, results, settings.function, settings.max_deliver)
        await self._sweeper.start(topology.consumers)
        await self.consumer.start()
        self.state = WorkerState.READY
        self.ready_at = datetime.now(UTC)
        METRICS.ready.labels(settings.function).set(1)
        await self._heartbeat.beat()
        log.info(
            "ready: function=%s model=%s version=%s providers=%s warmup_ms=%s cold_start_s=%.2f",
            settings.function,
            model.info.name,
            model.info.version,
            model.info.providers,
            {k: round(v, 1) for k, v in self.warmup_ms.items()},
            self.cold_start_s or 0.0,
            extra={"function": settings.function, "model_version": model.info.version},
        )

    @property
    def cold_start_s(self) -> float | None:
        if self.ready_at is None:
            return None
        return (self.ready_at - self.started_at).total_seconds()

    def snapshot(self) -> Heartbeat:
        completed = self.consumer.completed if self.consumer else 0
        sizes = self.consumer.batch_sizes[-50:] if self.consumer else []
        return Heartbeat(
            worker_id=self.worker_id,
            function=self.settings.function,
            state=self.state,
            started_at=self.started_at,
            ready_at=self.ready_at,
            cold_start_s=self.cold_start_s,
            jobs_completed=completed,
            jobs_per_s=self._heartbeat.rate(completed) if self._heartbeat else 0.0,
            mean_batch_size=float(np.mean(sizes)) if sizes else 0.0,
            in_flight=self.consumer.in_flight if self.consumer else 0,
            interval_s=self.settings.heartbeat_interval_s,
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Drain and close; safe to call more than once."""
        if self.state is WorkerState.STOPPED:
            return
        self.state = WorkerState.DRAINING
        METRICS.ready.labels(self.settings.function).set(0)
        if self._sweeper:
            await self._sweeper.stop()
        if self.consumer:
            await self.consumer.stop(timeout)
        self.state = WorkerState.STOPPED
        if self._heartbeat:
            await self._heartbeat.stop()
        if self.nc and not self.nc.is_closed:
            await self.nc.drain()
        log.info("stopped", extra={"function": self.settings.function})


async def run_worker(settings: WorkerSettings) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain; a second signal exits at once."""
    worker = Worker(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting without draining")
            os._exit(1)
        log.info("signal received: draining")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    start = asyncio.create_task(worker.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if start.done() and start.exception() is not None:
        stopped.cancel()
        raise start.exception()  # type: ignore[misc]
    await stopped
    if not start.done():
        start.cancel()
    await worker.stop()
