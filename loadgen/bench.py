"""Benchmarks against baselines measured in the same run (`make bench`).

Each figure is a ratio to a bare baseline on the same machine, at the same moment:

* compute: worker end-to-end throughput through NATS vs raw ONNX Runtime `run()` on the
  same model, batch size and threads;
* latency: tiny-model job round trip vs a bare nats-py request/reply;
* memory: worker resident set vs a bare process holding the same ONNX Runtime session;
* cold start: worker process start to ready vs bare session create + one inference.

Prints a table and writes a JSON record to `reports/bench-<time>.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import numpy as np
import psutil
from nats.aio.msg import Msg
from rich.console import Console
from rich.table import Table

from function.client import SurgeClient
from function.demo import start_worker_process, wait_ready
from function.imaging import decode_image
from function.models import fetch_photos, load_model, load_task
from function.nats_server import EmbeddedNats

__all__ = ["main"]

console = Console()
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models"))
BARE_SESSION = """
import sys, time
from pathlib import Path
from function.models import load_model, load_task
from function.worker import process_start_time
task = load_task(sys.argv[1])
model = load_model(task, cache_dir=Path(sys.argv[2]), intra_op_threads=int(sys.argv[3]))
model.warmup([1])
elapsed = time.time() - process_start_time()
for _ in range(int(sys.argv[4])):  # steady state: ORT plans its memory on the second run
    model.warmup([1])
import psutil
print(elapsed, psutil.Process().memory_info().rss)
"""


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def raw_throughput(function: str, batch: int, threads: int, seconds: float) -> float:
    """Images per second from `run()` alone on preprocessed inputs."""
    task = load_task(function)
    model = load_model(task, cache_dir=MODEL_DIR, intra_op_threads=threads)
    image = decode_image(fetch_photos(MODEL_DIR)["astronaut"].read_bytes(), None, max_pixels=10**8)
    samples = [task.preprocess(image)] * batch
    model.run_batch(samples)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run_batch(samples)
        done += batch
    return done / (time.perf_counter() - start)


def bare_cold_start(function: str, threads: int) -> tuple[float, int]:
    """A bare process: (seconds to session create + one inference, steady-state rss bytes)."""
    out = subprocess.run(
        [sys.executable, "-c", BARE_SESSION, function, str(MODEL_DIR), str(threads), "5"],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed, rss = out.stdout.split()
    return float(elapsed), int(rss)


async def worker_throughput(url: str, function: str, jobs: int) -> float:
    """Jobs per second between the first and the last result of a backlog of `jobs`."""
    image = fetch_photos(MODEL_DIR)["astronaut"].read_bytes()
    async with await SurgeClient.connect(url) as client:
        inbox = await client.inbox()
        ids = [
            await client.submit(image, function=function, reply_to=inbox.subject)
            for _ in range(jobs)
        ]
        await inbox.wait(ids, timeout=900)
        times = sorted(inbox.received_at.values())
        await inbox.close()
    return (len(times) - 1) / (times[-1] - times[0])


async def _bare_request_reply(url: str, count: int, payload: bytes) -> list[float]:
    nc = await nats.connect(url)

    async def echo(msg: Msg) -> None:
        await msg.respond(b'{"status":"ok"}')

    await nc.subscribe("bench.echo", cb=echo)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await nc.request("bench.echo", payload, timeout=5)
        times.append((time.perf_counter() - start) * 1000)
    await nc.drain()
    return times


async def _surge_round_trips(url: str, count: int, payload: bytes) -> list[float]:
    async with await SurgeClient.connect(url) as client:
        inbox = await client.inbox()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            job_id = await client.submit(payload, function="tiny", reply_to=inbox.subject)
            await inbox.wait([job_id], timeout=10)
            times.append((time.perf_counter() - start) * 1000)
        await inbox.close()
    return times


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run(jobs: int, batch: int, threads: int, round_trip_count: int) -> dict[str, Any]:
    record: dict[str, Any] = {"batch": batch, "threads": threads, "cpu_count": os.cpu_count()}
    env = {
        "SURGE_MAX_BATCH": str(batch),
        "SURGE_INTRA_OP_THREADS": str(threads),
        "SURGE_MODEL_DIR": str(MODEL_DIR.resolve()),
        "SURGE_MAX_BATCH_WAIT_MS": "2",
        "SURGE_LOG_LEVEL": "WARNING",
    }
    logs = Path(tempfile.mkdtemp(prefix="surge-bench-"))
    with console.status("bare: session create + one inference"):
        bare_start, bare_rss = bare_cold_start("remove-bg", threads)
    with console.status("raw ONNX Runtime run() throughput"):
        raw = raw_throughput("remove-bg", batch, threads, seconds=15)
    with EmbeddedNats(log_file=logs / "nats.log") as server:
        start = time.perf_counter()
        proc = start_worker_process(server.url, "remove-bg", logs / "worker.log", env)
        try:
            beats = asyncio.run(wait_ready(server.url, "remove-bg", 1, timeout=300))
            ready_wall = time.perf_counter() - start
            with console.status(f"worker throughput over {jobs} jobs"):
                e2e = asyncio.run(worker_throughput(server.url, "remove-bg", jobs))
            worker_rss = psutil.Process(proc.pid).memory_info().rss
        finally:
            _stop(proc)
        tiny = start_worker_process(server.url, "tiny", logs / "tiny.log", env)
        try:
            asyncio.run(wait_ready(server.url, "tiny", 1, timeout=120))
            payload = _tiny_png()
            with console.status("round trips"):
                bare_rt = asyncio.run(_bare_request_reply(server.url, round_trip_count, payload))
                surge_rt = asyncio.run(_surge_round_trips(server.url, round_trip_count, payload))
        finally:
            _stop(tiny)
    record["compute"] = {"raw_img_s": raw, "worker_img_s": e2e, "ratio": e2e / raw}
    record["latency_ms"] = {
        "surge": _stats(surge_rt),
        "bare": _stats(bare_rt),
        "p50_ratio": _stats(surge_rt)["p50"] / _stats(bare_rt)["p50"],
    }
    record["memory"] = {
        "worker_rss": worker_rss,
        "bare_rss": bare_rss,
        "ratio": worker_rss / bare_rss,
    }
    worker_start = beats[0].cold_start_s or ready_wall
    record["cold_start_s"] = {
        "worker": worker_start,
        "worker_seen_by_bench": ready_wall,
        "bare": bare_start,
        "ratio": worker_start / bare_start,
    }
    return record


def _table(record: dict[str, Any]) -> Table:
    table = Table(title=f"Surge bench (batch {record['batch']}, {record['threads']} thread(s))")
    for column in ("figure", "surge", "baseline", "ratio", "target"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    c, lat, mem, cold = (record[k] for k in ("compute", "latency_ms", "memory", "cold_start_s"))
    table.add_row(
        "throughput img/s",
        f"{c['worker_img_s']:.2f}",
        f"{c['raw_img_s']:.2f} raw ORT",
        f"{c['ratio']:.3f}",
        ">= 0.9",
    )
    table.add_row(
        "round trip p50 ms",
        f"{lat['surge']['p50']:.2f}",
        f"{lat['bare']['p50']:.2f} nats req",
        f"{lat['p50_ratio']:.2f}",
        "<= 2 ms",
    )
    table.add_row(
        "round trip p99 ms", f"{lat['surge']['p99']:.2f}", f"{lat['bare']['p99']:.2f}", "", ""
    )
    table.add_row(
        "resident MB",
        f"{mem['worker_rss'] / 2**20:.0f}",
        f"{mem['bare_rss'] / 2**20:.0f} bare",
        f"{mem['ratio']:.2f}",
        "<= 1.5",
    )
    table.add_row(
        "start to ready s",
        f"{cold['worker']:.2f}",
        f"{cold['bare']:.2f} bare",
        f"{cold['ratio']:.2f}",
        "",
    )
    return table


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    record = run(args.jobs, args.batch, args.threads, args.round_trips)
    console.print(_table(record))
    out = Path("reports") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    console.print(f"record: {out}")


if __name__ == "__main__":
    main()
