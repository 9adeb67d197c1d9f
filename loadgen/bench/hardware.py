"""Does a worker use the machine with its defaults? `python -m loadgen.bench.hardware`.

One run, side by side on the same model and inputs (`remove-bg`, 320x320 PNG jobs):

* the machine's raw limit: one ONNX Runtime process per usable CPU, one thread each,
  all at once (the baseline every row is divided by);
* raw ONNX Runtime, one process with one thread per usable CPU;
* `surge worker` with its defaults (what a user gets);
* `surge worker` as it was configured before (1 thread, batches of 8), and two such
  workers, beside it for comparison.

Worker rows are jobs/s through NATS between the first and last result of a backlog;
the resident memory of the worker processes is read at the end (memory per image/s).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image
from rich.console import Console
from rich.table import Table

from function.local.nats_server import EmbeddedNats
from function.local.processes import wait_ready
from function.models import fetch_photos
from function.models.hardware import usable_cpus
from loadgen.bench.workers import WorkerProcess, backlog_rate, family_rss

__all__ = ["Row", "main", "measure", "raw_limit"]

console = Console()
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
FUNCTION = "remove-bg"
_RAW = (
    "import sys; from pathlib import Path; from loadgen.bench.baselines import raw_throughput; "
    "print(raw_throughput(sys.argv[1], 1, int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])))"
)


@dataclass(frozen=True)
class Row:
    """One configuration: images per second, and resident MB of its worker processes."""

    name: str
    per_s: float
    rss_mb: float | None = None


def raw_limit(processes: int, threads: int, seconds: float) -> float:
    """Images/s of `processes` raw ONNX Runtime loops running at once."""
    command = [sys.executable, "-c", _RAW, FUNCTION, str(threads), str(seconds), str(MODEL_DIR)]
    running = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    return sum(float(p.communicate()[0].split()[-1]) for p in running)


def job_image() -> bytes:
    """The astronaut photo at 320x320, as PNG: the model's own input size."""
    photo = Image.open(fetch_photos(MODEL_DIR)["astronaut"]).convert("RGB").resize((320, 320))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


def _workers(folder: Path, name: str, env: dict[str, str], count: int, jobs: int) -> Row:
    base = {"SURGE_MODEL_DIR": str(MODEL_DIR), "SURGE_LOG_LEVEL": "INFO", **env}
    with EmbeddedNats(store_dir=folder / name) as server:
        workers = [
            WorkerProcess(server.url, FUNCTION, folder / f"{name}-{i}.log", base).start()
            for i in range(count)
        ]
        try:
            asyncio.run(wait_ready(server.url, FUNCTION, count, timeout=300))
            per_s = asyncio.run(backlog_rate(server.url, FUNCTION, job_image(), jobs))
            rss = sum(family_rss(w.proc.pid) for w in workers if w.proc)
        finally:
            for worker in workers:
                worker.stop()
    return Row(name, per_s, rss / 2**20)


def measure(folder: Path, jobs: int, seconds: float) -> list[Row]:
    """Every row, in one run (raw limit first)."""
    cpus = usable_cpus()
    rows = [
        Row(
            f"raw ONNX Runtime, {cpus} processes x 1 thread (the limit)",
            raw_limit(cpus, 1, seconds),
        ),
        Row(f"raw ONNX Runtime, 1 process x {cpus} threads", raw_limit(1, cpus, seconds)),
    ]
    rows.append(_workers(folder, "surge worker, defaults", {}, 1, jobs))
    before = {"SURGE_INTRA_OP_THREADS": "1", "SURGE_RUNNERS": "1", "SURGE_MAX_BATCH": "8"}
    rows.append(
        _workers(folder, "surge worker, earlier defaults (1 thread, batch 8)", before, 1, jobs)
    )
    one_each = {"SURGE_INTRA_OP_THREADS": "1", "SURGE_RUNNERS": "1"}
    rows.append(_workers(folder, f"{cpus} surge workers x 1 runner", one_each, cpus, jobs))
    return rows


def _table(rows: list[Row]) -> Table:
    limit = rows[0].per_s
    table = Table(title=f"{FUNCTION}, 320x320 PNG jobs: images/s against the machine's limit")
    for column in ("configuration", "img/s", "vs. limit", "worker RSS MB", "MB per img/s"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for row in rows:
        rss = "" if row.rss_mb is None else f"{row.rss_mb:.0f}"
        per = "" if row.rss_mb is None else f"{row.rss_mb / row.per_s:.0f}"
        table.add_row(row.name, f"{row.per_s:.2f}", f"{row.per_s / limit:.2f}", rss, per)
    return table


def bench(
    jobs: Annotated[int, typer.Option(min=10, help="Jobs per worker configuration.")] = 40,
    seconds: Annotated[float, typer.Option(min=2, help="Seconds per raw measurement.")] = 10.0,
) -> None:
    """The worker's defaults against the machine's raw ONNX Runtime limit."""
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="surge-hw-bench-") as folder,
        console.status("raw limit, then each worker configuration"),
    ):
        rows = measure(Path(folder), jobs, seconds)
    console.print(_table(rows))
    console.print(
        f"machine: {os.cpu_count()} CPUs ({usable_cpus()} usable); one run; "
        f"{time.perf_counter() - started:.0f} s"
    )


def main() -> None:
    """`python -m loadgen.bench.hardware`."""
    typer.run(bench)


if __name__ == "__main__":
    main()
