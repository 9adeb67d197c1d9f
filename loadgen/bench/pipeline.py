"""Does the pipeline keep a GPU fed? `python -m loadgen.bench.pipeline`.

A model that costs nothing (a channel mean: the input and output shapes of U^2-Net-p,
output named as `remove-bg` expects) leaves decode, preprocess, postprocess and PNG
encoding as the whole cost of a 512x512 `remove-bg` job. One worker process with its
defaults drains the same backlog pinned to 1 CPU, then to all usable CPUs (its CPU
affinity set before it loads anything); the figure is jobs/s on N CPUs / (N x jobs/s on
one), target >= 0.8; then, beside the defaults, all usable CPUs with one CPU process per
CPU (`SURGE_CPU_PROCESSES`). Also prints what the defaults' rate would be on a 16-core
GPU node, the CPU each party used while the backlog drained (on a small machine
nats-server and the load client share the worker's cores, so jobs per worker CPU-second
says how well the pipeline itself scales), and the worker process's own CPU per job: the
part no number of cores spreads, so the most jobs/s one worker can pass.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NamedTuple

import onnx
import psutil
import typer
from onnx import TensorProto, helper
from PIL import Image
from rich.console import Console
from rich.table import Table

from function.local.nats_server import EmbeddedNats
from function.local.processes import wait_ready
from function.models import fetch_photos
from function.models.hardware import usable_cpus
from function.models.remove_bg import RemoveBackground
from loadgen.bench.workers import WorkerProcess, backlog_rate, family

__all__ = ["Drain", "Drains", "amdahl", "free_model", "main", "measure"]

console = Console()
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
SIZE = 320


def free_model(path: Path) -> Path:
    """An ONNX graph as cheap as a model can be, shaped like U^2-Net-p."""
    source = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    target = RemoveBackground.output_name or "output"
    out = helper.make_tensor_value_info(target, TensorProto.FLOAT, ["N", 1, SIZE, SIZE])
    mean = helper.make_node("ReduceMean", ["input"], [target], axes=[1], keepdims=1)
    graph = helper.make_graph([mean], "free", [source], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def job_image(side: int = 512) -> bytes:
    """The astronaut photo at `side` x `side`, as PNG."""
    photo = Image.open(fetch_photos(MODEL_DIR)["astronaut"]).convert("RGB")
    buffer = io.BytesIO()
    photo.resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


class Drain(NamedTuple):
    """One measurement: jobs/s, the CPUs the worker (with its CPU processes) and the
    rest (nats-server and the load client) used meanwhile, and the worker process's
    own CPU per job (its event loop: the part that does not spread over cores)."""

    rate: float
    worker_cpus: float
    others_cpus: float
    main_ms_per_job: float = 0.0


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            total += sum(process.cpu_times()[:2])
        except psutil.NoSuchProcess:  # a CPU process replaced meanwhile
            continue
    return total


def _rate(
    folder: Path, model: Path, cpus: list[int], jobs: int, processes: int | None = None
) -> Drain:
    env = {
        "SURGE_MODEL_DIR": str(MODEL_DIR),
        "SURGE_MODEL_PATH": str(model),
        "SURGE_LOG_LEVEL": "WARNING",
    }
    name = f"{len(cpus)}-{processes}"
    if processes is not None:
        env["SURGE_CPU_PROCESSES"] = str(processes)
    with EmbeddedNats(store_dir=folder / f"nats-{name}") as server:
        worker = WorkerProcess(server.url, "remove-bg", folder / f"w{name}.log", env)
        worker.start()
        try:
            assert worker.proc is not None
            psutil.Process(worker.proc.pid).cpu_affinity(cpus)  # before it imports anything
            asyncio.run(wait_ready(server.url, "remove-bg", 1, timeout=120))
            image = job_image()
            asyncio.run(backlog_rate(server.url, "remove-bg", image, max(10, jobs // 10)))
            if processes:  # they start once the worker is up: measure them, not threads
                asyncio.run(_processes_running(server.url, processes))
            assert server.pid is not None
            main = psutil.Process(worker.proc.pid)
            measured = family(main.pid)
            others = [psutil.Process(server.pid), psutil.Process()]
            start, own = time.perf_counter(), _cpu_seconds([main])
            used, rest = _cpu_seconds(measured), _cpu_seconds(others)
            rate = asyncio.run(backlog_rate(server.url, "remove-bg", image, jobs))
            wall = time.perf_counter() - start
            used, rest = _cpu_seconds(measured) - used, _cpu_seconds(others) - rest
            own = _cpu_seconds([main]) - own
            return Drain(rate, used / wall, rest / wall, 1000 * own / jobs)
        finally:
            worker.stop()


class Drains(NamedTuple):
    """The defaults on one CPU and on every usable CPU (`cpus` of them), and beside them
    every usable CPU with one CPU process per CPU (None on a machine of one CPU)."""

    one: Drain
    every: Drain
    cpus: int
    processes: Drain | None


async def _processes_running(url: str, processes: int, timeout: float = 120) -> None:
    """Until the worker's heartbeat says `processes` CPU processes run its stages."""
    deadline = time.monotonic() + timeout
    while True:
        beats = await wait_ready(url, "remove-bg", 1, timeout=timeout)
        if beats[0].cpu_processes >= processes:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker's {processes} CPU processes never all ran")
        await asyncio.sleep(0.2)


def measure(
    folder: Path, jobs: int, on_drain: Callable[[str, Drain], None] = lambda n, d: None
) -> Drains:
    """The drains (`Drains`); each is also handed to `on_drain` as it ends."""
    everything = sorted(os.sched_getaffinity(0))[: usable_cpus()]
    model = free_model(folder / "free.onnx")
    runs: list[tuple[str, list[int], int | None]] = [
        ("1 CPU", everything[:1], None),
        (f"{len(everything)} CPUs", everything, None),
    ]
    if len(everything) > 1:
        runs.append((f"{len(everything)} CPUs, CPU processes", everything, len(everything)))
    drains = []
    for name, cpus, processes in runs:
        drains.append(_rate(folder, model, cpus, jobs, processes))
        on_drain(name, drains[-1])
    return Drains(drains[0], drains[1], len(everything), drains[2] if len(drains) > 2 else None)


def _said(name: str, drain: Drain) -> None:
    console.print(f"{name}: {drain.rate:.1f} jobs/s, the worker using {drain.worker_cpus:.2f} CPUs")


def bench(
    jobs: Annotated[int, typer.Option(min=20, help="Jobs per measurement.")] = 300,
) -> None:
    """The pipeline's scaling over CPUs with a model that costs nothing."""
    with (
        tempfile.TemporaryDirectory(prefix="surge-pipeline-") as folder,
        console.status("one CPU, every usable CPU, then every usable CPU with CPU processes"),
    ):
        drains = measure(Path(folder), jobs, _said)
    one, every, cpus = drains.one, drains.every, drains.cpus
    table = Table(title="512x512 remove-bg jobs, model that costs nothing: jobs/s")
    columns = ("run", "jobs/s", "vs. N x one CPU", "worker CPUs used", "server+client CPUs")
    for column in (*columns, "jobs per worker CPU-s", "worker process CPU ms/job"):
        table.add_column(column, justify="right")
    rows = [("1 CPU, defaults", 1, one), (f"{cpus} CPUs, defaults", cpus, every)]
    if drains.processes is not None:
        rows.append((f"{cpus} CPUs, {cpus} CPU processes", cpus, drains.processes))
    for name, n, drain in rows:
        per_cpu = drain.rate / drain.worker_cpus if drain.worker_cpus else 0.0
        table.add_row(
            name,
            f"{drain.rate:.1f}",
            f"{drain.rate / (n * one.rate):.2f}",
            f"{drain.worker_cpus:.2f}",
            f"{drain.others_cpus:.2f}",
            f"{per_cpu:.1f}",
            f"{drain.main_ms_per_job:.2f}",
        )
    console.print(table)
    serial, projected = amdahl(one.rate, every.rate, cpus, 16)
    console.print(
        f"a 16-core projection of the defaults from this run (Amdahl's law, the serial "
        f"share it implies: {serial:.0%}): about {projected:.0f} jobs/s of 512x512 "
        "remove-bg, pre- and postprocessing only. A projection: a worker's Python parts "
        "share one interpreter lock, so only a run on the node itself says what it reaches"
    )
    for name, _, drain in rows[1:]:
        console.print(
            f"{name}: the worker process itself (its event loop, one thread) spent "
            f"{drain.main_ms_per_job:.2f} ms of CPU per job, so whatever the cores it "
            f"passes at most about {1000 / max(drain.main_ms_per_job, 1e-3):.0f} jobs/s"
        )


def amdahl(one: float, every: float, cpus: int, target: int) -> tuple[float, float]:
    """(serial share, jobs/s on `target` CPUs) by Amdahl's law from the rate on one CPU
    and on `cpus`: the serial share s solves every / one = 1 / (s + (1 - s) / cpus).
    With nothing to go by (one CPU only, or a rate of 0) no gain is claimed."""
    if cpus <= 1 or one <= 0 or every <= 0:
        return 1.0, one
    serial = min(max((cpus * one / every - 1) / (cpus - 1), 0.0), 1.0)
    return serial, one / (serial + (1 - serial) / target)


def main() -> None:
    """`python -m loadgen.bench.pipeline`."""
    typer.run(bench)


if __name__ == "__main__":
    main()
