"""`surge demo`: the whole job path on one machine, with a summary and a report.

Starts an embedded nats-server and worker processes, publishes a spike of real
background-removal jobs made from the test photos, waits for every result, writes
the masks and cut-outs, prints a summary table and leaves `report.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nats
import numpy as np
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from function.client import SurgeClient
from function.heartbeat import Heartbeat, WorkerState
from function.jobs import ImageOutput, JobStatus, Result
from function.models import fetch_photos
from function.nats_server import EmbeddedNats
from function.settings import Priority, WorkerSettings, heartbeat_subject

__all__ = ["run_demo", "start_worker_process", "stop_worker_processes", "wait_ready"]


def start_worker_process(
    nats_url: str, function: str, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m function worker` as a child process, logging to `log_path`."""
    child_env = {
        **os.environ,
        "SURGE_NATS_URL": nats_url,
        "SURGE_FUNCTION": function,
        **(env or {}),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "function", "worker"], env=child_env, stdout=log, stderr=log
        )


def stop_worker_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """SIGTERM every worker (they drain), then wait; kill one that outlives `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(nats_url: str, function: str, count: int, timeout: float) -> list[Heartbeat]:
    """Wait until `count` workers of `function` report ready in their heartbeats."""
    nc = await nats.connect(nats_url)
    ready: dict[str, Heartbeat] = {}
    done = asyncio.Event()

    async def on_beat(msg: Msg) -> None:
        beat = Heartbeat.model_validate_json(msg.data)
        if beat.state is WorkerState.READY:
            ready[beat.worker_id] = beat
            if len(ready) >= count:
                done.set()

    await nc.subscribe(heartbeat_subject(function), cb=on_beat)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await nc.drain()
    return list(ready.values())


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


async def _spike(
    url: str, photos: list[Path], jobs: int, function: str, out: Path, console: Console
) -> tuple[list[Result], float]:
    async with await SurgeClient.connect(url) as client:
        inbox = await client.inbox()
        start = time.monotonic()
        ids = []
        for index in range(jobs):
            photo = photos[index % len(photos)]
            ids.append(
                await client.submit(
                    photo.read_bytes(),
                    function=function,
                    priority=Priority.HIGH if index % 8 == 0 else Priority.NORMAL,
                    outputs=("mask", "cutout") if index < len(photos) else (),
                    reply_to=inbox.subject,
                )
            )
        with console.status("waiting for results") as status:
            while len(inbox.results) < jobs and time.monotonic() - start < 600:
                status.update(f"results {len(inbox.results)}/{jobs}")
                await asyncio.sleep(0.2)
        results = await inbox.wait(ids, timeout=0)
        elapsed = time.monotonic() - start
        for result in results.values():
            for name, output in result.outputs.items():
                if isinstance(output, ImageOutput):
                    data = await client.output_bytes(output)
                    (out / f"{result.job_id}.{name}.png").write_bytes(data)
        await inbox.close()
        return list(results.values()), elapsed


def _summary(
    results: list[Result], jobs: int, elapsed: float, cold: list[float]
) -> dict[str, object]:
    latencies = [r.timings.total_ms for r in results]
    batches = Counter(r.timings.batch_size for r in results if r.status is JobStatus.OK)
    errors = Counter(r.error.code.value for r in results if r.error)
    return {
        "jobs": jobs,
        "answered": len(results),
        "missing": jobs - len(results),
        "ok": sum(r.status is JobStatus.OK for r in results),
        "errors": dict(errors),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p99": _percentile(latencies, 99),
            "max": max(latencies, default=0.0),
        },
        "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "throughput_jobs_per_s": len(results) / elapsed if elapsed else 0.0,
        "elapsed_s": elapsed,
        "worker_cold_start_s": cold,
    }


def _table(summary: dict[str, object]) -> Table:
    table = Table(title="Surge demo")
    table.add_column("metric")
    table.add_column("value", justify="right")
    latency = summary["latency_ms"]
    assert isinstance(latency, dict)
    rows = [
        ("jobs published", summary["jobs"]),
        ("answered ok", summary["ok"]),
        (
            "answered error",
            sum(summary["errors"].values()) if isinstance(summary["errors"], dict) else 0,
        ),
        ("missing", summary["missing"]),
        ("latency p50 (ms)", f"{latency['p50']:.0f}"),
        ("latency p99 (ms)", f"{latency['p99']:.0f}"),
        ("throughput (jobs/s)", f"{summary['throughput_jobs_per_s']:.2f}"),
        ("batch sizes seen", summary["batch_sizes"]),
        ("worker cold start (s)", summary["worker_cold_start_s"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def run_demo(*, jobs: int, out: Path, workers: int, function: str, console: Console) -> bool:
    """Run the demo; True when every job was answered ok."""
    out.mkdir(parents=True, exist_ok=True)
    settings = WorkerSettings()
    with console.status("fetching models and photos"):
        photos = list(fetch_photos(settings.model_dir).values())
    with EmbeddedNats(log_file=out / "nats-server.log") as server:
        console.print(f"nats-server with JetStream on {server.url}")
        procs = [
            start_worker_process(server.url, function, out / f"worker-{i}.log")
            for i in range(workers)
        ]
        try:
            with console.status(f"starting {workers} worker(s): load model, warm up"):
                beats = asyncio.run(wait_ready(server.url, function, workers, timeout=300))
            cold = [round(b.cold_start_s or 0.0, 2) for b in beats]
            console.print(f"workers ready (cold start {cold} s); publishing {jobs} jobs")
            results, elapsed = asyncio.run(_spike(server.url, photos, jobs, function, out, console))
        finally:
            stop_worker_processes(procs)
    summary = _summary(results, jobs, elapsed, cold)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    console.print(_table(summary))
    console.print(f"masks, cut-outs and report.json in {out}/")
    return summary["missing"] == 0 and summary["ok"] == jobs
