"""Benchmarks against baselines measured in the same run (`make bench`).

Each figure is a ratio to a bare baseline on the same machine, at the same moment:

* compute: worker end-to-end throughput through NATS with the defaults a user gets vs the
  machine's raw limit (one single-threaded ONNX Runtime process per usable CPU), or with
  `--batch`/`--threads` vs raw `run()` on the same batch and threads (target >= 0.95 of
  the same-configuration baseline; see `loadgen.bench.hardware` for the side by side);
* message path: `tiny` worker throughput vs a bare nats-py loop doing the same fetch +
  publish result + ack on a JetStream pull consumer (target >= 0.7), with each one's CPU
  per job from its first answer to its last (steadier than rates on a shared machine);
  beside it, the floor: the bare loop keeping Surge's guarantees (results stored before
  the replies, acks confirmed), what those cost with no Surge code at all;
* latency: `tiny` job round trip p50 vs a bare nats-py request/reply (target <= 1.5x),
  beside the floor of the guarantees alone and the machine's wake penalty (a step of a
  tiny job timed back to back and after 5 ms idle: one job at a time pays it per hop);
* memory: worker resident set vs a bare process holding the same session (<= 1.5x);
* cold start: worker process start to ready vs bare session create + one inference
  (target <= 1.2x).

A figure that misses its target is profiled (cProfile of a worker; see
`loadgen.bench.profile`) and the profile goes into the record. Prints a table and writes
`reports/bench-<time>.json`.

    python -m loadgen.bench.suite               # the defaults
    python -m loadgen.bench.suite --batch 1 --threads 1
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from function.contract.wire import JobStatus, ModelInfo, Result, ScoresOutput, Timings
from function.local.nats_server import EmbeddedNats
from function.models import fetch_photos
from function.models.hardware import usable_cpus
from loadgen.bench import profile as prof
from loadgen.bench.baselines import (
    bare_cold_start,
    bare_pull_loop,
    bare_request_reply,
    raw_throughput,
)
from loadgen.bench.floor import bare_floor_loop, bare_job_round_trips
from loadgen.bench.hardware import raw_limit
from loadgen.bench.record import (
    BenchRecord,
    ColdStart,
    Compute,
    Figure,
    Latency,
    Memory,
    MessagePath,
    MessageRound,
    Percentiles,
    TimeProfile,
)
from loadgen.bench.wake import wake_penalty
from loadgen.bench.workers import (
    WorkerProcess,
    family_rss,
    surge_message_path,
    surge_round_trips,
    worker_throughput,
)
from loadgen.run.runner import tiny_png

__all__ = ["TARGETS", "bench", "figures_of", "main", "run"]

console = Console()
if not console.is_terminal:
    console.width = 120
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
MESSAGE_BATCH = 8
TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "compute": (">= 0.95", lambda r: r >= 0.95),
    "message path": (">= 0.7", lambda r: r >= 0.7),
    "latency p50": ("<= 1.5", lambda r: r <= 1.5),
    "memory": ("<= 1.5", lambda r: r <= 1.5),
    "cold start": ("<= 1.2", lambda r: r <= 1.2),
}


def _percentiles(values: list[float]) -> Percentiles:
    return Percentiles(p50=float(np.percentile(values, 50)), p99=float(np.percentile(values, 99)))


def _result_size() -> int:
    """Bytes of a typical `tiny` result, so the bare loop publishes as much."""
    result = Result(
        job_id="f" * 32,
        status=JobStatus.OK,
        function="tiny",
        outputs={"scores": ScoresOutput(scores={"mean": 0.5})},
        model=ModelInfo(name="tiny", version="0" * 16, providers=["CPUExecutionProvider"]),
        timings=Timings(queued_ms=1.0, batch_size=1, inference_ms=0.1, total_ms=2.0),
        trace_id="0" * 32,
    )
    return len(result.model_dump_json())


def _env(batch: int, threads: int) -> dict[str, str]:
    """The worker's environment: its own choices unless `batch` or `threads` are set."""
    env = {"SURGE_MODEL_DIR": str(MODEL_DIR), "SURGE_LOG_LEVEL": "WARNING"}
    if batch:
        env.update(SURGE_MAX_BATCH=str(batch), SURGE_MAX_BATCH_WAIT_MS="2")
    if threads:
        env.update(SURGE_INTRA_OP_THREADS=str(threads), SURGE_RUNNERS="1")
    return env


def _cpu_ratio(bare: float | None, worker: float | None) -> float | None:
    return bare / worker if bare and worker else None


def _cpu(us: float | None) -> str:
    return f", {us:.0f} us CPU/job" if us is not None else ""


def figures_of(record: BenchRecord) -> list[Figure]:
    ratios = {
        "compute": record.compute.ratio,
        "message path": record.message_path.ratio,
        "latency p50": record.latency_ms.p50_ratio,
        "memory": record.memory.ratio,
        "cold start": record.cold_start_s.ratio,
    }
    return [
        Figure(name=name, ratio=ratio, target=TARGETS[name][0], meets=TARGETS[name][1](ratio))
        for name, ratio in ratios.items()
    ]


def _message_path(
    url: str, logs: Path, env: dict[str, str], jobs: int, rounds: int
) -> tuple[MessagePath, WorkerProcess]:
    """`rounds` of the bare loop then a `tiny` worker over `jobs` each; the round with the
    median ratio, and the last round's worker (still running, for the latency figure)."""
    payload, size = tiny_png(), _result_size()
    tiny_env = {**env, "SURGE_MAX_BATCH": str(MESSAGE_BATCH)}
    measured: list[MessageRound] = []
    tiny: WorkerProcess | None = None
    for number in range(1, rounds + 1):
        if tiny is not None:
            tiny.stop()
        with console.status(f"message path {number}/{rounds}: bare loop, floor, tiny worker"):
            bare = asyncio.run(bare_pull_loop(url, jobs, payload, MESSAGE_BATCH, size))
            floor = asyncio.run(bare_floor_loop(url, jobs, payload, MESSAGE_BATCH, size))
            surge, tiny = asyncio.run(surge_message_path(url, jobs, logs, tiny_env))
        measured.append(
            MessageRound(
                bare_jobs_s=bare.jobs_s,
                worker_jobs_s=surge.jobs_s,
                ratio=surge.jobs_s / bare.jobs_s,
                bare_cpu_us_per_job=bare.cpu_us_per_job,
                worker_cpu_us_per_job=surge.cpu_us_per_job,
                floor_jobs_s=floor.jobs_s,
                floor_cpu_us_per_job=floor.cpu_us_per_job,
            )
        )
    assert tiny is not None
    median = sorted(measured, key=lambda r: r.ratio)[(len(measured) - 1) // 2]
    figure = MessagePath(
        jobs=jobs,
        bare_jobs_s=median.bare_jobs_s,
        worker_jobs_s=median.worker_jobs_s,
        ratio=median.ratio,
        bare_cpu_us_per_job=median.bare_cpu_us_per_job,
        worker_cpu_us_per_job=median.worker_cpu_us_per_job,
        cpu_ratio=_cpu_ratio(median.bare_cpu_us_per_job, median.worker_cpu_us_per_job),
        floor_jobs_s=median.floor_jobs_s,
        floor_cpu_us_per_job=median.floor_cpu_us_per_job,
        floor_ratio=median.worker_jobs_s / median.floor_jobs_s if median.floor_jobs_s else None,
        rounds=measured,
    )
    return figure, tiny


def _latency(url: str, round_trips: int) -> Latency:
    """Round trips of a bare request/reply, a bare job with Surge's guarantees (the
    floor), and Surge (a `tiny` worker must be running)."""
    payload = tiny_png()
    with console.status(f"round trips x {round_trips}: bare, floor, Surge"):
        bare = _percentiles(asyncio.run(bare_request_reply(url, round_trips, payload)))
        floor = _percentiles(
            asyncio.run(bare_job_round_trips(url, round_trips, payload, _result_size()))
        )
        surge = _percentiles(asyncio.run(surge_round_trips(url, round_trips, payload)))
    with console.status("wake penalty: a step back to back, then after 5 ms idle"):
        wake = wake_penalty()
    return Latency(
        surge=surge,
        bare=bare,
        p50_ratio=surge.p50 / bare.p50,
        floor=floor,
        floor_p50_ratio=surge.p50 / floor.p50,
        wake=wake,
    )


def run(
    url: str,
    logs: Path,
    jobs: int,
    batch: int,
    threads: int,
    round_trips: int,
    message_jobs: int,
    rounds: int = 3,
) -> BenchRecord:
    """Measure every figure against the nats-server at `url` (profiles come later)."""
    env = _env(batch, threads)
    with console.status("bare: session create + one inference"):
        bare_start, bare_rss = bare_cold_start("remove-bg", threads, MODEL_DIR)
    with console.status("raw ONNX Runtime run() throughput"):
        if batch or threads:  # the same batch and threads as the worker
            raw = raw_throughput("remove-bg", batch or 1, threads or 1, 15, MODEL_DIR)
        else:  # the machine's limit: one single-threaded process per usable CPU
            raw = raw_limit(usable_cpus(), 1, 15)
    worker = WorkerProcess(url, "remove-bg", logs / "worker.log", env).start()
    try:
        with console.status("remove-bg worker: start to ready"):
            beat, seen = asyncio.run(worker.ready())
        with console.status(f"worker throughput over {jobs} jobs"):
            e2e = asyncio.run(worker_throughput(url, "remove-bg", jobs, MODEL_DIR))
        assert worker.proc is not None
        worker_rss = family_rss(worker.proc.pid)
    finally:
        worker.stop()
    message_path, tiny = _message_path(url, logs, env, message_jobs, rounds)
    try:
        latency = _latency(url, round_trips)
    finally:
        tiny.stop()
    worker_start = beat.cold_start_s or seen
    record = BenchRecord(
        batch=batch or beat.max_batch,
        threads=threads or beat.intra_op_threads,
        cpu_count=os.cpu_count(),
        compute=Compute(raw_img_s=raw, worker_img_s=e2e, ratio=e2e / raw),
        message_path=message_path,
        latency_ms=latency,
        memory=Memory(worker_rss=worker_rss, bare_rss=bare_rss, ratio=worker_rss / bare_rss),
        cold_start_s=ColdStart(
            worker=worker_start,
            worker_seen_by_bench=seen,
            bare=bare_start,
            ratio=worker_start / bare_start,
        ),
    )
    record.figures = figures_of(record)
    return record


def profile_shortfalls(record: BenchRecord, url: str, everything: bool) -> dict[str, TimeProfile]:
    """Profile each figure that misses its target (or all of them)."""
    short = {f.name for f in record.figures if everything or not f.meets}
    profiles: dict[str, TimeProfile] = {}
    if "compute" in short:
        with console.status("profiling: remove-bg worker"):
            photo = fetch_photos(MODEL_DIR)["astronaut"].read_bytes()
            drain = prof.run_async(
                prof.profile_drain(
                    url,
                    "remove-bg",
                    16,
                    photo,
                    MODEL_DIR,
                    max_batch=record.batch,
                    intra_op_threads=record.threads,
                )
            )
            stages = prof.stage_costs("remove-bg", record.threads, record.batch, MODEL_DIR)
            drain.phases_ms.update({f"stage_{k}": v for k, v in stages.items()})
            profiles["compute"] = drain
    if "message path" in short:
        with console.status("profiling: tiny worker draining a backlog"):
            profiles["message path"] = prof.run_async(
                prof.profile_drain(
                    url,
                    "tiny",
                    record.message_path.jobs,
                    tiny_png(),
                    MODEL_DIR,
                    max_batch=MESSAGE_BATCH,
                )
            )
    if "latency p50" in short:
        with console.status("profiling: tiny round trips"):
            profiles["latency p50"] = prof.run_async(
                prof.profile_round_trips(url, MODEL_DIR, 200, surge_round_trips, tiny_png())
            )
    if "cold start" in short:
        with console.status("profiling: worker cold start"):
            profiles["cold start"] = prof.profile_cold_start(
                url, "remove-bg", record.threads, record.batch, MODEL_DIR
            )
    return profiles


def table(record: BenchRecord) -> Table:
    """The figures, their baselines, ratios and targets."""
    t = Table(title=f"Surge bench (batch {record.batch}, {record.threads} thread(s))")
    for column in ("figure", "surge", "baseline", "ratio", "target", ""):
        t.add_column(column, justify="left" if column == "figure" else "right")
    c, mp, lat = record.compute, record.message_path, record.latency_ms
    mem, cold = record.memory, record.cold_start_s
    rows = {
        "compute": ("throughput img/s", f"{c.worker_img_s:.2f}", f"{c.raw_img_s:.2f} raw ORT"),
        "message path": (
            "tiny jobs/s",
            f"{mp.worker_jobs_s:.0f}{_cpu(mp.worker_cpu_us_per_job)}",
            f"{mp.bare_jobs_s:.0f} bare loop{_cpu(mp.bare_cpu_us_per_job)}"
            + (
                f"; {mp.floor_jobs_s:.0f} floor{_cpu(mp.floor_cpu_us_per_job)}, Surge"
                f" {mp.floor_ratio:.2f}x"
                if mp.floor_jobs_s and mp.floor_ratio
                else ""
            ),
        ),
        "latency p50": (
            "round trip p50 ms",
            f"{lat.surge.p50:.2f} (p99 {lat.surge.p99:.2f})",
            f"{lat.bare.p50:.2f} (p99 {lat.bare.p99:.2f}) req/reply"
            + (
                f"; {lat.floor.p50:.2f} floor, Surge {lat.floor_p50_ratio:.2f}x"
                if lat.floor and lat.floor_p50_ratio
                else ""
            ),
        ),
        "memory": (
            "resident MB",
            f"{mem.worker_rss / 2**20:.0f}",
            f"{mem.bare_rss / 2**20:.0f} bare",
        ),
        "cold start": ("start to ready s", f"{cold.worker:.2f}", f"{cold.bare:.2f} bare"),
    }
    for figure in record.figures:
        label, surge, base = rows[figure.name]
        verdict = "[green]ok[/]" if figure.meets else "[red]short[/]"
        t.add_row(label, surge, base, f"{figure.ratio:.3f}", figure.target, verdict)
    if lat.wake is not None:
        t.caption = (
            f"wake penalty: a step of a tiny job takes {lat.wake.after_idle_us:.0f} us after "
            f"{lat.wake.gap_ms:g} ms idle, {lat.wake.back_to_back_us:.0f} us back to back "
            f"({lat.wake.ratio:.1f}x) in the bench's process: one job at a time idles between "
            "steps, a drain does not"
        )
    return t


def bench(
    jobs: Annotated[int, typer.Option(help="remove-bg jobs for the compute figure.")] = 60,
    batch: Annotated[
        int, typer.Option(help="Batch size for raw ORT and the worker (0: the worker's choice).")
    ] = 0,
    threads: Annotated[
        int, typer.Option(help="Intra-op threads, one runner (0: the worker's choice).")
    ] = 0,
    round_trips: Annotated[int, typer.Option(help="Round trips for the latency figure.")] = 300,
    message_jobs: Annotated[int, typer.Option(help="Jobs for the message-path figure.")] = 2000,
    rounds: Annotated[
        int, typer.Option(min=1, help="Message-path rounds (bare, then Surge); the median counts.")
    ] = 3,
    profile_all: Annotated[
        bool, typer.Option(help="Profile every figure, not only those short of target.")
    ] = False,
    out_dir: Annotated[Path, typer.Option(help="Where the JSON record goes.")] = Path("reports"),
) -> None:
    """Measure Surge against bare baselines; print a table; write a JSON record."""
    logs = Path(tempfile.mkdtemp(prefix="surge-bench-"))
    with EmbeddedNats(log_file=logs / "nats.log") as server:
        record = run(server.url, logs, jobs, batch, threads, round_trips, message_jobs, rounds)
        console.print(table(record))
        record.profiles = profile_shortfalls(record, server.url, profile_all)
    for name, profile in record.profiles.items():
        console.print(f"[bold]{name}[/]: {profile.what}")
        phases = ", ".join(f"{k} {v:.1f} ms" for k, v in profile.phases_ms.items())
        console.print(f"  phases: {phases}")
        console.print(f"  {profile.summary}")
    out = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(record.model_dump_json(indent=2))
    console.print(f"record: {out}")


def main() -> None:
    """`python -m loadgen.bench` (`make bench`)."""
    typer.run(bench)


if __name__ == "__main__":
    main()
