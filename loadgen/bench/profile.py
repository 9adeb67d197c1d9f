"""Where the time goes, for a bench figure that misses its target: cProfile of a worker.

* message path / latency: an in-process `tiny` worker (its event loop, where a tiny job
  runs end to end) draining a backlog, or answering one job at a time;
* compute: the same for `remove-bg`, plus the per-image cost of each stage measured
  directly (cProfile sees only the event-loop thread, not the inference thread);
* cold start: a fresh process importing and starting a worker, with the main thread
  and the model-loading thread profiled, and the worker's own phase timings.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats

from function.contract.settings import Priority, WorkerSettings, job_subject
from function.models import fetch_photos, load_model, load_task
from function.models.imaging import decode_image
from function.transport.topology import ensure_streams
from function.worker import Worker
from loadgen.bench.baselines import ReplyCollector, publish_backlog
from loadgen.bench.hotspots import to_profile
from loadgen.bench.record import TimeProfile

__all__ = [
    "profile_cold_start",
    "profile_drain",
    "profile_round_trips",
    "stage_costs",
]

COLD_START = """
import asyncio, cProfile, json, sys, time
main_profile = cProfile.Profile()
main_profile.enable()
import function.cli, function.http.serve  # what `surge worker` imports before it starts
import function.worker as worker_module
from function.contract.settings import WorkerSettings
imported = time.time()
original = worker_module.load_and_warm

def profiled_load(*args, **kwargs):
    thread_profile = cProfile.Profile()
    thread_profile.enable()
    try:
        return original(*args, **kwargs)
    finally:
        thread_profile.disable()
        thread_profile.dump_stats(sys.argv[5])

worker_module.load_and_warm = profiled_load
settings = WorkerSettings(nats_url=sys.argv[1], function=sys.argv[2], model_dir=sys.argv[3],
                          intra_op_threads=int(sys.argv[4]), max_batch=int(sys.argv[7]))

async def main():
    worker = worker_module.Worker(settings)
    await worker.start()
    main_profile.disable()
    phases = {"interpreter_and_imports": imported - worker_module.PROCESS_START}
    phases.update((k, v) for k, v in worker.phases.items() if k not in ("import", "total"))
    phases["total"] = worker.cold_start_s
    await worker.stop()
    return phases

phases = asyncio.run(main())
main_profile.dump_stats(sys.argv[6])
print(json.dumps(phases))
"""


def _settings(url: str, function: str, model_dir: Path, **overrides: Any) -> WorkerSettings:
    return WorkerSettings(nats_url=url, function=function, model_dir=model_dir, **overrides)


async def profile_drain(
    url: str, function: str, jobs: int, payload: bytes, model_dir: Path, **overrides: Any
) -> TimeProfile:
    """cProfile of an in-process worker started on a backlog of `jobs`, until all answered."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, WorkerSettings())
    inbox = nc.new_inbox()
    try:
        async with ReplyCollector(nc, inbox, jobs) as replies:
            await publish_backlog(
                js, job_subject(Priority.NORMAL, function), jobs, payload, inbox, "pr"
            )
            worker = Worker(_settings(url, function, model_dir, **overrides))
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.enable()
            await worker.start()
            ready = time.perf_counter()
            await replies.wait(600)
            profiler.disable()
            end = time.perf_counter()
            await worker.stop()
    finally:
        await nc.drain()
    return to_profile(
        profiler,
        figure=f"{function} drain",
        what=f"cProfile of an in-process {function} worker (event-loop thread) started on a "
        f"backlog of {jobs} jobs, until every result arrived",
        wall_s=end - start,
        phases_ms={
            "worker_start": (ready - start) * 1000,
            "drain": (end - ready) * 1000,
            "per_job": (end - ready) * 1000 / jobs,
        },
    )


async def profile_round_trips(
    url: str,
    model_dir: Path,
    count: int,
    round_trips: Callable[[str, int, bytes], Awaitable[list[float]]],
    payload: bytes,
) -> TimeProfile:
    """cProfile of one-at-a-time round trips to an in-process `tiny` worker (client and
    worker share the loop, so both show)."""
    worker = Worker(_settings(url, "tiny", model_dir))
    await worker.start()
    try:
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        times = await round_trips(url, count, payload)
        profiler.disable()
        wall = time.perf_counter() - start
    finally:
        await worker.stop()
    times.sort()
    return to_profile(
        profiler,
        figure="latency",
        what=f"cProfile of {count} sequential tiny round trips, client and worker in one process",
        wall_s=wall,
        phases_ms={"p50": times[len(times) // 2], "per_round_trip": wall * 1000 / count},
    )


def profile_cold_start(
    url: str, function: str, threads: int, batch: int, model_dir: Path
) -> TimeProfile:
    """A fresh process importing and starting a worker, both threads profiled."""
    with tempfile.TemporaryDirectory() as tmp:
        thread_file, main_file = Path(tmp) / "thread.prof", Path(tmp) / "main.prof"
        args = [url, function, str(model_dir), str(threads), str(thread_file), str(main_file)]
        args.append(str(batch))
        out = subprocess.run(
            [sys.executable, "-c", COLD_START, *args], capture_output=True, text=True, check=True
        )
        phases = json.loads(out.stdout.strip().splitlines()[-1])
        stats = pstats.Stats(str(main_file))
        if thread_file.exists():
            stats.add(str(thread_file))
    return to_profile(
        stats,
        figure="cold start",
        what="cProfile of a fresh process: imports + Worker.start() on the main thread, "
        "plus the model-loading thread; phases are the worker's own (process start to ready)",
        wall_s=float(phases.get("total", 0.0)) or 1.0,
        phases_ms={k: float(v) * 1000 for k, v in phases.items()},
    )


def stage_costs(
    function: str, threads: int, batch: int, model_dir: Path, rounds: int = 10
) -> dict[str, float]:
    """Milliseconds per image of each stage a worker runs, measured one by one."""
    task = load_task(function)
    model = load_model(task, cache_dir=model_dir, intra_op_threads=threads)
    data = fetch_photos(model_dir)["astronaut"].read_bytes()
    costs: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        for _ in range(rounds):
            value = fn()
        costs[name] = (time.perf_counter() - start) * 1000 / rounds
        return value

    image = timed("decode", lambda: decode_image(data, None, max_pixels=10**8))
    sample = timed("preprocess", lambda: task.preprocess(image))
    out = timed("inference_per_image", lambda: model.run_batch([sample] * batch))
    costs["inference_per_image"] /= batch
    outputs = task.default_outputs
    timed("postprocess", lambda: task.postprocess(out[0], image, outputs))
    return costs


def run_async(coro: Awaitable[TimeProfile]) -> TimeProfile:
    """`asyncio.run` for a profile coroutine."""

    async def wrap() -> TimeProfile:
        return await coro

    return asyncio.run(wrap())
