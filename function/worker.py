"""The worker: one process that loads a model and consumes one function's jobs.

    worker = Worker(WorkerSettings(function="remove-bg"))
    await worker.start()        # connect, create streams/consumers, load + warm the model
    ...
    await worker.stop()         # drain: nothing lost

`function.http.serve` runs it behind the HTTP surface; SIGTERM drains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from nats.aio.client import Client as NATS

from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.nats_auth import NatsAuth, NatsConnectError, redact_url
from function.contract.settings import WorkerSettings
from function.engine.accounting import WarmMeter
from function.engine.consumer import JobConsumer
from function.engine.control import JobControl
from function.engine.cpuprocs import start_ticks
from function.engine.modelset import ModelSet
from function.engine.preflight import StartupError, check_startup
from function.engine.rollout import RolloutFollower
from function.engine.screen import ScreenError, Screening, load_screen
from function.models import LoadedModel
from function.models.warmup import (
    ModelAdapter,
    Warmed,
    WarmupHook,
    load_and_warm,
)
from function.telemetry import METRICS, set_process_fields
from function.transport.calls import CallGateway
from function.transport.connect import open_nats
from function.transport.connection import ConnectionHealth, Trouble
from function.transport.events import JobEvents
from function.transport.heartbeat import HeartbeatPublisher
from function.transport.modelstore import ModelStore
from function.transport.orphans import OrphanSweeper
from function.transport.poison import PoisonSweeper
from function.transport.recovery import TenantConsumers, TopologyWatch
from function.transport.storage import ResultStore
from function.transport.topology import Topology, ensure_topology, jobs_waiting
from function.transport.webhooks import WebhookSender

__all__ = ["PROCESS_START", "StartupError", "Worker", "check_startup", "process_start_time"]

log = logging.getLogger("surge.worker")
BACKLOG_ANSWER_WAIT_S = 5.0  # the longest a loaded model waits to learn whether jobs wait


def process_start_time() -> float:
    """When this process started (Unix time), from /proc on Linux; else module import time."""
    ticks = start_ticks()
    if ticks is None:
        return time.time()
    try:
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


PROCESS_START = process_start_time()
IMPORTED_AT = time.time()


class Worker:
    """Connects, loads the model, consumes; `ready` once warm and attached."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        name: str | None = None,
        warmup_hooks: list[WarmupHook] | None = None,
        auth: NatsAuth | None = None,
    ) -> None:
        self.settings = settings
        self.auth = auth if auth is not None else NatsAuth()
        self.warmup_hooks = warmup_hooks if warmup_hooks is not None else []
        self.phases: dict[str, float] = {"import": IMPORTED_AT - PROCESS_START}
        self.error: BaseException | None = None
        self.worker_id = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = datetime.fromtimestamp(PROCESS_START, UTC)
        self.state = WorkerState.WARMING
        self.ready_at: datetime | None = None
        self.nc: NATS | None = None
        self.consumer: JobConsumer | None = None
        self.model: LoadedModel | None = None
        self.screening: Screening | None = None  # the screen's model, with SURGE_SCREEN
        self.warmup_ms: dict[int, float] = {}
        self.tuned: WorkerSettings | None = None  # settings with runners, threads, batch chosen
        self._sweeper: PoisonSweeper | None = None
        self._heartbeat: HeartbeatPublisher | None = None
        self.connection = ConnectionHealth()
        self.topology_watch: TopologyWatch | None = None
        self._orphans: OrphanSweeper | None = None
        self._calls: CallGateway | None = None
        self._control: JobControl | None = None
        self._events: JobEvents | None = None
        self._webhooks: WebhookSender | None = None
        self._attached = threading.Event()  # set from the loop, awaited by the load's thread
        self._jobs_waiting = False
        self._meter: WarmMeter | None = None  # idle-but-warm and cold-start seconds
        self.rollout: RolloutFollower | None = None  # with SURGE_MODEL_ROLLOUT

    @property
    def ready(self) -> bool:
        return self.state is WorkerState.READY

    async def _connect(self, settings: WorkerSettings) -> Topology:
        """Connect, start the heartbeat, create (or check) the streams and consumers."""
        clock = time.perf_counter()
        self.nc = await open_nats(
            settings.nats_url,
            self.auth,
            name=f"surge-worker-{self.worker_id}",
            wait_s=settings.connect_wait_s,
            **self.connection.callbacks(),
        )
        self.connection.nc = self.nc
        log.info(
            "connected to NATS at %s with %s", redact_url(settings.nats_url), self.auth.describe()
        )
        self._heartbeat = HeartbeatPublisher(
            self.nc, settings.function, self.snapshot, settings.heartbeat_interval_s
        )
        self._heartbeat.start()
        topology = await ensure_topology(self.nc.jetstream(), settings)
        self.phases["connect"] = time.perf_counter() - clock
        try:
            self._jobs_waiting = await jobs_waiting(self.nc.jetstream(), topology.consumers) > 0
        except Exception as exc:  # only a shortcut: warm as usual
            log.debug("could not count waiting jobs: %r", exc)
        return topology

    def _backlog_at_start(self) -> bool:
        """(the load's thread) Whether jobs were waiting when the worker attached: ready
        needs the connection anyway, so waiting for its answer costs the start nothing."""
        self._attached.wait(BACKLOG_ANSWER_WAIT_S)
        return self._jobs_waiting

    def _load(self, settings: WorkerSettings) -> tuple[Warmed, Screening | None]:
        """(the load's thread) The model, loaded and warm; then the screen's, if set."""
        warmed = load_and_warm(settings, self.warmup_hooks, self.phases, self._backlog_at_start)
        if settings.screen is None or settings.screen_via == "queue":  # not in this worker
            return warmed, None
        clock = time.perf_counter()
        try:
            screening = load_screen(settings.screen, warmed.settings)
        except ScreenError as exc:
            raise StartupError(str(exc)) from None
        self.phases["screen"] = time.perf_counter() - clock
        return warmed, screening

    async def start(self) -> None:
        """Connect and create the topology, load + warm the model, then start consuming.
        Sets the process's interpreter switch interval (`switch_interval_ms`)."""
        sys.setswitchinterval(self.settings.switch_interval_ms / 1000)
        try:
            check_startup(self.settings)  # before anything touches NATS
            await self._start()
        except (NatsConnectError, StartupError) as exc:  # one clear line, no traceback
            self.error = exc
            log.error("worker failed to start: %s", exc)
            raise
        except asyncio.CancelledError:  # stopped while starting (SIGTERM): not a failure
            raise
        except BaseException as exc:
            self.error = exc
            log.exception("worker failed to start")
            raise

    async def _start(self) -> None:
        settings = self.settings
        # The model loads and warms in its thread while NATS connects: neither waits.
        loading = asyncio.get_running_loop().run_in_executor(None, self._load, settings)
        connecting = asyncio.ensure_future(self._connect(settings))
        connecting.add_done_callback(lambda _: self._attached.set())  # or failed: never hang
        try:  # whichever fails first is the reason: a model that cannot load need not
            # wait for NATS, nor a refused connection for the model
            both: list[asyncio.Future[Any]] = [loading, connecting]
            await asyncio.wait(both, return_when=asyncio.FIRST_EXCEPTION)
            failed = [f for f in both if f.done() and f.exception() is not None]
            if failed:
                await failed[0]  # raises its error
            topology = await connecting
            (model, self.warmup_ms, settings), self.screening = await loading
        except BaseException:
            connecting.cancel()
            loading.cancel()  # the load's thread ends on its own; nothing waits for it
            raise
        assert self.nc is not None and self._heartbeat is not None
        js = self.nc.jetstream()
        self.model = model
        self.tuned = settings
        for setting in ("runners", "intra_op_threads", "max_batch"):
            METRICS.tuned.labels(settings.function, setting).set(getattr(settings, setting))
        set_process_fields(function=settings.function, model_version=model.info.version)
        clock = time.perf_counter()
        results = ResultStore(
            self.nc,
            js,
            topology.blobs,
            inline_limit=settings.inline_output_limit,
            max_input=settings.max_payload_bytes,
            function=settings.function,
        )
        adapter = ModelAdapter(model, self.warmup_ms, settings.max_batch)
        models = ModelSet(
            adapter,
            max_error_rate=settings.canary_max_error_rate,
            min_jobs=settings.canary_min_jobs,
        )
        if settings.job_events:
            self._events = JobEvents(self.nc, self.worker_id)
            self._events.start()
        if settings.webhook_secret is not None:
            self._webhooks = WebhookSender(self.nc, settings, worker=self.worker_id)
            self._webhooks.start()
        self.consumer = JobConsumer(
            self.nc,
            topology.consumers,
            models,
            results,
            settings,
            self._events,
            self._webhooks,
            self.screening,
        )
        self._sweeper = PoisonSweeper(
            self.nc, js, results, settings.function, settings.max_deliver, model=model.info
        )
        await self._sweeper.start(topology.sweeper)
        self.topology_watch = TopologyWatch(js, settings)
        self.consumer.on_pull_trouble = self.topology_watch.poke
        self._orphans = OrphanSweeper(
            js, results, settings.function, grace_s=settings.orphan_grace_s
        )
        self.topology_watch.on_tenants = self._tenants_changed
        if settings.model_rollout:
            await self._follow_rollout(settings, models, adapter)
        await self.consumer.start()
        try:
            await self.topology_watch.follow_tenants()
        except Exception as exc:  # e.g. a user without STREAM.LIST: open jobs still run
            log.warning("could not list tenants (open jobs are served; retrying): %r", exc)
        self.topology_watch.start()
        self._orphans.start()
        self._calls = CallGateway(self.nc, js, settings.function)
        await self._calls.start()
        self._control = JobControl(self.nc, settings.function, self.worker_id, self.consumer.held)
        await self._control.start()
        self.phases["attach"] = time.perf_counter() - clock
        self.state = WorkerState.READY
        self.ready_at = datetime.now(UTC)
        self.phases["total"] = self.cold_start_s or 0.0
        for phase, seconds in self.phases.items():
            METRICS.cold_start.labels(settings.function, phase).set(seconds)
        METRICS.ready.labels(settings.function).set(1)
        self._meter = WarmMeter(settings.function, self.consumer.busy)
        self._meter.start(self.cold_start_s or 0.0)
        await self._heartbeat.beat()
        log.info(
            "ready in %.2fs: model=%s version=%s providers=%s phases=%s loop=%s",
            self.cold_start_s or 0.0,
            model.info.name,
            model.info.version,
            model.info.providers,
            {k: round(v, 3) for k, v in self.phases.items()},
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    async def _follow_rollout(
        self, settings: WorkerSettings, models: ModelSet, base: ModelAdapter
    ) -> None:
        """Serve the versions the function's rollout record names (loaded before ready)."""
        assert self.nc is not None
        try:
            store = await ModelStore.open(
                self.nc.jetstream(), create=True, replicas=settings.stream_replicas
            )
            self.rollout = RolloutFollower(store, settings, models, base)
            await self.rollout.start()
        except Exception as exc:  # e.g. a NATS user without the buckets: the image's model
            log.warning("not following model rollouts (serving %s): %r", base.info.version, exc)
            self.rollout = None

    async def _tenants_changed(self, tenants: TenantConsumers) -> None:
        """Fetch from every tenant's stream, with its rate quota; drop removed ones."""
        consumer, orphans = self.consumer, self._orphans
        assert consumer is not None and orphans is not None
        consumer.rates.set_limits({t: quota.max_rate for t, (quota, _) in tenants.items()})
        for tenant in consumer.tenants:
            if tenant not in tenants:
                await consumer.remove_tenant(tenant)
        for tenant, (_, consumers) in tenants.items():
            await consumer.add_tenant(tenant, consumers)
        orphans.set_tenants(list(tenants))

    def trouble(self, *, for_liveness: bool = False) -> Trouble | None:
        """The oldest current problem (connection, lost topology, failing pulls), if any.

        For liveness a dropped connection that nats-py is still re-establishing does not
        count (restarting the pod would not bring NATS back); one closed for good does.
        """
        reconnecting = for_liveness and self.connection.fatal is None
        found = (
            None if reconnecting else self.connection.trouble,
            self.topology_watch.trouble if self.topology_watch else None,
            self.consumer.pull_trouble if self.consumer else None,
        )
        return min((t for t in found if t is not None), key=lambda t: t[1], default=None)

    @property
    def cold_start_s(self) -> float | None:
        if self.ready_at is None:
            return None
        return (self.ready_at - self.started_at).total_seconds()

    def snapshot(self) -> Heartbeat:
        completed = self.consumer.completed if self.consumer else 0
        sizes = self.consumer.batch_sizes[-50:] if self.consumer else []
        cpu = self.consumer.processes if self.consumer else None
        processes = cpu.running if cpu else 0
        METRICS.tuned.labels(self.settings.function, "cpu_processes").set(processes)
        return Heartbeat(
            worker_id=self.worker_id,
            function=self.settings.function,
            state=self.state,
            started_at=self.started_at,
            ready_at=self.ready_at,
            cold_start_s=self.cold_start_s,
            cold_start_phases=dict(self.phases) if self.ready_at else {},
            jobs_completed=completed,
            jobs_per_s=self._heartbeat.rate(completed) if self._heartbeat else 0.0,
            mean_batch_size=float(np.mean(sizes)) if sizes else 0.0,
            in_flight=self.consumer.in_flight if self.consumer else 0,
            interval_s=self.settings.heartbeat_interval_s,
            runners=self.tuned.runners if self.tuned else 0,
            intra_op_threads=self.tuned.intra_op_threads if self.tuned else 0,
            max_batch=self.tuned.max_batch if self.tuned else 0,
            cpu_processes=processes,
            model_versions=self.consumer.models.versions if self.consumer else [],
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Drain and close; safe to call more than once."""
        if self.state is WorkerState.STOPPED:
            return
        self.state = WorkerState.DRAINING
        METRICS.ready.labels(self.settings.function).set(0)
        if self._meter is not None:
            await self._meter.stop()
        for task in (self._calls, self._orphans, self.topology_watch, self.rollout):
            if task is not None:
                await task.stop()
        # With the connection closed for good nothing can be settled: JetStream
        # redelivers whatever was in flight after ack_wait, so do not wait for it.
        if self.consumer:
            await self.consumer.stop(timeout if self.connection.fatal is None else 0.5)
        if self._control:  # after the drain: a job held until then can still be cancelled
            await self._control.stop()
        if self._events:
            await self._events.stop()
        if self._webhooks:  # after the drain: its last results are queued for delivery
            await self._webhooks.stop()
        if self._sweeper:
            await self._sweeper.stop()
        self.state = WorkerState.STOPPED
        if self._heartbeat:
            await self._heartbeat.stop()
        self.connection.closing = True
        if self.nc and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as exc:  # e.g. still reconnecting: nothing left to flush
                log.warning("NATS drain failed (%r); closing", exc)
                await self.nc.close()
        log.info("stopped", extra={"function": self.settings.function})
