"""`surge up` and the spike demo: nats-server + scaler + locally scaled workers.

Usage::

    run_up(function="remove-bg", max_workers=2)              # until Ctrl-C / SIGTERM
    run_up(function="tiny", secure=secure_stack(dir, url, ["acme"]))  # TLS, users, tenants
    report = run_spike_demo(jobs=60, function="tiny")          # from zero, and back to zero
    for t, replicas, backlog in report.timeline: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from function.client import ResultInbox, SurgeClient
from function.contract.nats_auth import NatsAuth
from function.contract.settings import Priority, WorkerSettings
from function.contract.wire import Result
from function.local.nats_cluster import embedded_server
from function.local.nats_server import EmbeddedNats
from function.local.secure_stack import SecureStack, add_missing_tenants
from function.transport.connect import open_nats
from scaler.config import ScalerSettings
from scaler.hub import ScalerHub
from scaler.local import LocalConfig, LocalScaler, TimelinePoint

__all__ = ["SpikeReport", "embedded_scaler", "run_spike_demo", "run_up", "spike_demo"]

log = logging.getLogger("surge.scaler.stack")


@contextlib.asynccontextmanager
async def embedded_scaler(
    nats_url: str,
    config: LocalConfig,
    settings: ScalerSettings | None = None,
    worker: WorkerSettings | None = None,
    auth: NatsAuth | None = None,
) -> AsyncIterator[tuple[ScalerHub, LocalScaler, asyncio.Event]]:
    """A hub and a running `LocalScaler`; set the event to stop; workers drain on exit."""
    hub = await ScalerHub.connect(nats_url, settings=settings, worker=worker, auth=auth)
    local = LocalScaler(hub, nats_url, config)
    stop = asyncio.Event()
    task = asyncio.create_task(local.run(stop))
    try:
        yield hub, local, stop
    finally:
        stop.set()
        await task
        await local.shutdown()
        await hub.close()


async def _up(
    url: str,
    config: LocalConfig,
    settings: ScalerSettings,
    grpc_port: int,
    worker: WorkerSettings | None,
    secure: SecureStack | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    auth = secure.auth() if secure is not None else None
    if secure is not None and secure.tenants:  # before the scaler looks for tenants
        nc = await open_nats(url, auth, name="surge-up", reconnect=False)
        try:
            await add_missing_tenants(nc.jetstream(), secure.tenants, worker or WorkerSettings())
        finally:
            await nc.close()
    async with embedded_scaler(url, config, settings, worker, auth) as (hub, _local, stop):
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = None
        if grpc_port:
            from scaler.server import start_grpc

            server, _ = await start_grpc(hub, "127.0.0.1", grpc_port)
        log.info("embedded stack up: jobs on %s, function %s", url, config.function)
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("stopping: draining workers")
        if server is not None:
            await server.stop(1.0)


def run_up(
    *,
    function: str,
    max_workers: int = 2,
    cooldown_s: float = 10.0,
    port: int = 4222,
    store_dir: Path = Path(".cache/surge/nats"),
    log_dir: Path = Path(".cache/surge/local"),
    grpc_port: int = 0,
    metrics_port: int = 0,
    metadata: dict[str, str] | None = None,
    cluster: int = 1,
    secure: SecureStack | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run nats-server (or a loopback cluster of `cluster` nodes, streams replicated on
    every node), the scaler and 0..`max_workers` workers until a signal.

    With `secure` (one node, its URL on `port`) the server takes its TLS and users, the
    scaler and workers connect as its trusted user, and each of its tenants gets a job
    stream. `on_ready` is called once all is up (the tenants can submit).
    """
    from prometheus_client import start_http_server

    if secure is not None and cluster > 1:
        raise ValueError("a secured stack runs one node")

    settings = ScalerSettings(metrics_port=metrics_port)
    config = LocalConfig(
        function=function,
        max_workers=max_workers,
        cooldown_s=cooldown_s,
        log_dir=log_dir,
        metadata=metadata or {},
        worker_env={"SURGE_STREAM_REPLICAS": str(cluster)} if cluster > 1 else {},
    )
    if secure is not None:
        config.worker_env |= secure.env
    worker = WorkerSettings(stream_replicas=cluster) if cluster > 1 else None
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    log_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_server(cluster, port=port, store_dir=store_dir, log_dir=log_dir)
    if secure is not None:
        assert isinstance(server, EmbeddedNats)  # one node
        if secure.url != server.url:
            raise ValueError(f"the secured stack is for {secure.url}, the server is {server.url}")
        server.extra_config = secure.server_config
    with server:
        asyncio.run(_up(server.url, config, settings, grpc_port, worker, secure, on_ready))


@dataclass
class SpikeReport:
    """What the spike demo saw: every job's fate and the replicas over time."""

    jobs: int
    answered: int
    ok: int
    first_result_s: float | None
    all_results_s: float | None
    back_to_zero_s: float | None
    peak_replicas: int
    timeline: list[TimelinePoint] = field(default_factory=list)
    worker_exits: list[tuple[int, int | None, bool]] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    elapsed_s: float = 0.0
    inputs: dict[str, int] = field(default_factory=dict)
    """Job id -> the index in `payloads` of the input it was sent."""
    cold_start_s: float | None = None
    """The longest start-to-ready the workers' heartbeats reported."""


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (index % 256, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


ProgressHook = Callable[[int, int, int], None]
"""Called about 4 times a second with (results so far, replicas, backlog)."""


async def _watch(inbox: ResultInbox, local: LocalScaler, hook: ProgressHook) -> None:
    while True:
        point = local.timeline[-1] if local.timeline else (0.0, 0, 0)
        hook(len(inbox.results), local.replicas, point[2])
        await asyncio.sleep(0.25)


async def spike_demo(
    url: str,
    config: LocalConfig,
    jobs: int,
    spread_s: float,
    payloads: list[bytes],
    wait_s: float,
    *,
    outputs: tuple[str, ...] = (),
    on_progress: ProgressHook | None = None,
) -> SpikeReport:
    """The spike demo against the nats-server at `url` (see `run_spike_demo`)."""
    settings = ScalerSettings(metrics_port=0, plan_refresh_s=5.0)
    async with embedded_scaler(url, config, settings) as (hub, local, _stop):
        watched = await hub.watcher(config.function)
        await asyncio.sleep(1.0)  # idle first: the timeline starts at zero replicas
        async with await SurgeClient.connect(url) as client:
            inbox = await client.inbox()
            watcher = (
                asyncio.create_task(_watch(inbox, local, on_progress)) if on_progress else None
            )
            start = time.monotonic()
            ids, inputs = [], {}
            for index in range(jobs):
                if spread_s and jobs > 1:
                    await asyncio.sleep(
                        max(0.0, start + spread_s * index / jobs - time.monotonic())
                    )
                priority = Priority.HIGH if index % 8 == 0 else Priority.NORMAL
                job = payloads[index % len(payloads)]
                job_id = await client.submit(
                    job,
                    function=config.function,
                    priority=priority,
                    reply_to=inbox.subject,
                    outputs=outputs,
                )
                ids.append(job_id)
                inputs[job_id] = index % len(payloads)
            results = await inbox.wait(ids, timeout=wait_s)
            arrived = [inbox.received_at[j] for j in results if j in inbox.received_at]
            elapsed = (max(arrived) if arrived else time.monotonic()) - start
            if watcher is not None:
                watcher.cancel()
            await inbox.close()
        done = time.monotonic()
        zero_at = None
        while time.monotonic() - done < config.cooldown_s + wait_s:
            if local.replicas == 0 and not local.draining:
                zero_at = time.monotonic()
                break
            await asyncio.sleep(0.1)
        timeline = list(local.timeline)
        cold_start_s = watched.replicas.cold_start_s
    exits = list(local.exits)  # read after shutdown: every worker has stopped by now
    return SpikeReport(
        jobs=jobs,
        answered=len(results),
        ok=sum(r.status.value == "ok" for r in results.values()),
        first_result_s=min(arrived) - start if arrived else None,
        all_results_s=max(arrived) - start if len(arrived) == jobs else None,
        back_to_zero_s=zero_at - done if zero_at is not None else None,
        peak_replicas=max((p[1] for p in timeline), default=0),
        timeline=timeline,
        worker_exits=exits,
        results=results,
        elapsed_s=elapsed,
        inputs=inputs,
        cold_start_s=cold_start_s,
    )


def run_spike_demo(
    *,
    jobs: int = 60,
    function: str = "tiny",
    max_workers: int = 2,
    cooldown_s: float = 3.0,
    spread_s: float = 0.0,
    payloads: list[bytes] | None = None,
    out: Path | None = None,
    wait_s: float = 120.0,
    metadata: dict[str, str] | None = None,
) -> SpikeReport:
    """A spike from zero workers and back to zero on the embedded stack.

    Publishes `jobs` jobs (over `spread_s` seconds) to an idle stack and returns the
    replica timeline `(t, replicas, backlog)` with the time to first and last result.
    """
    out = out or Path(tempfile.mkdtemp(prefix="surge-spike-"))
    out.mkdir(parents=True, exist_ok=True)
    config = LocalConfig(
        function=function,
        max_workers=max_workers,
        cooldown_s=cooldown_s,
        log_dir=out,
        metadata={"targetDrainSeconds": "5", "coldStartSeconds": "3", **(metadata or {})},
    )
    bodies = payloads or [_png(i) for i in range(8)]
    with EmbeddedNats(log_file=out / "nats-server.log") as nats:
        return asyncio.run(spike_demo(nats.url, config, jobs, spread_s, bodies, wait_s))
