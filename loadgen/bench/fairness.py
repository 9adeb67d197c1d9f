"""Fair share between tenants: `python -m loadgen.bench.fairness`.

One nats-server, tenants `a` and `b` (each with its own jobs stream), one worker
process. Tenant B sends a steady trickle of jobs and measures each one's round trip
(publish to result):

1. alone;
2. while tenant A's spike (`--spike` jobs published at once) drains: Surge's layout,
   each tenant on its own stream, served in turn;
3. the same spike with A's and B's jobs in one shared FIFO queue (the open stream):
   what tenants would get without fair share.

Prints B's p50/p99 in each phase, the ratios to B alone, and A's drain time; `--plot`
draws B's round trips over time in phases 2 and 3.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from function.client import SurgeClient
from function.contract.parse import job_headers
from function.contract.quota import TenantQuota
from function.contract.settings import JOBS_STREAM, Priority, WorkerSettings, job_subject
from function.contract.settings import tenant_stream as stream_of
from function.local.nats_server import EmbeddedNats
from function.local.processes import wait_ready
from function.transport.tenants import add_tenant
from loadgen.bench.workers import WorkerProcess
from loadgen.run.runner import tiny_png

__all__ = ["Phase", "main", "measure"]

console = Console()
MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
A, B = "a", "b"


@dataclass
class Phase:
    """Tenant B's round trips (ms, by send time in s) in one phase; A's drain time."""

    name: str
    sent_at: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    drain_s: float | None = None
    unanswered: int = 0

    def p(self, q: float) -> float:
        return float(np.percentile(self.round_trips, q)) if self.round_trips else float("nan")


async def _spike(client: SurgeClient, count: int, shared: bool, function: str) -> None:
    """Publish tenant A's `count` jobs at once (on the shared open queue if `shared`)."""
    image, acks = tiny_png(), []
    subject = job_subject(Priority.NORMAL, function, None if shared else A)
    for index in range(count):
        headers = job_headers(f"spike-{index}", content_type="image/png", tenant=None)
        acks.append(await client.js.publish_async(subject, image, headers=headers))
    await asyncio.gather(*acks)


async def _backlog(client: SurgeClient, shared: bool) -> int:
    info = await client.js.stream_info(JOBS_STREAM if shared else stream_of(A))
    return int(info.state.messages or 0)


async def _drained(client: SurgeClient, shared: bool, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _backlog(client, shared) == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"tenant A's backlog not drained in {timeout:.0f} s")


async def _trickle(
    b: SurgeClient, phase: Phase, rate: float, until: asyncio.Event, most: int, function: str
) -> None:
    """Tenant B: one job every 1/rate s until `until` is set (at most `most`)."""
    inbox, image = await b.inbox(), tiny_png()
    start, sent = time.monotonic(), dict[str, float]()
    while len(sent) < most and not until.is_set():
        sent_at = time.monotonic()
        job_id = await b.submit(image, function=function, reply_to=inbox.subject)
        sent[job_id] = sent_at
        await asyncio.sleep(max(0.0, start + len(sent) / rate - time.monotonic()))
    await inbox.wait(list(sent), timeout=120)
    phase.unanswered = len(set(sent) - inbox.received_at.keys())
    for job_id, sent_at in sorted(sent.items(), key=lambda item: item[1]):
        if job_id in inbox.received_at:
            phase.sent_at.append(sent_at - start)
            phase.round_trips.append((inbox.received_at[job_id] - sent_at) * 1000)


async def _phase(
    url: str, name: str, spike: int, shared: bool, rate: float, most: int, function: str
) -> Phase:
    phase = Phase(name)
    async with (
        await SurgeClient.connect(url, tenant=None if shared else A) as a,
        await SurgeClient.connect(url, tenant=None if shared else B) as b,
    ):
        done = asyncio.Event()
        trickle = asyncio.create_task(_trickle(b, phase, rate, done, most, function))
        if spike:
            started = time.monotonic()
            await _spike(a, spike, shared, function)
            await _drained(a, shared)
            phase.drain_s = time.monotonic() - started
            done.set()
        await trickle
    return phase


async def _run(url: str, spike: int, rate: float, alone: int, function: str) -> list[Phase]:
    async with await SurgeClient.connect(url) as admin:
        for tenant in (A, B):
            await add_tenant(admin.js, tenant, TenantQuota(), WorkerSettings())
    await wait_ready(url, function, 1, timeout=120)
    phases = [await _phase(url, "B alone", 0, False, rate, alone, function)]
    phases.append(await _phase(url, "B during A's spike", spike, False, rate, 10**6, function))
    phases.append(await _phase(url, "one shared queue", spike, True, rate, 10**6, function))
    return phases


def measure(folder: Path, spike: int, rate: float, alone: int, function: str) -> list[Phase]:
    """The three phases, in one run, against one worker process."""
    with EmbeddedNats(store_dir=folder / "nats") as server:
        env = {
            "SURGE_MODEL_DIR": str(MODEL_DIR),
            "SURGE_LOG_LEVEL": "WARNING",
            "SURGE_WARMUP_BATCH_SIZES": "[1]",
        }
        worker = WorkerProcess(server.url, function, folder / "worker.log", env).start()
        try:
            return asyncio.run(_run(server.url, spike, rate, alone, function))
        finally:
            worker.stop()


def _table(phases: list[Phase], spike: int) -> Table:
    alone = phases[0]
    table = Table(title=f"tenant B's round trip, ms, while tenant A sends {spike:,} jobs at once")
    for column in ("phase", "B jobs", "unanswered", "p50", "p99", "p99 / alone", "A drained in"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in phases:
        drained = "" if phase.drain_s is None else f"{phase.drain_s:.1f} s"
        table.add_row(
            phase.name,
            str(len(phase.round_trips)),
            str(phase.unanswered),
            f"{phase.p(50):.1f}",
            f"{phase.p(99):.1f}",
            f"{phase.p(99) / alone.p(99):.2f}",
            drained,
        )
    return table


def _plot(phases: list[Phase], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    for phase in phases[1:]:
        axis.plot(phase.sent_at, phase.round_trips, ".", markersize=4, label=phase.name)
    axis.axhline(phases[0].p(99), color="grey", linestyle="--", label="B alone, p99")
    axis.set_yscale("log")
    axis.set_xlabel("seconds since A's spike")
    axis.set_ylabel("B's round trip, ms (log)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def bench(
    spike: Annotated[int, typer.Option(min=100, help="Tenant A's jobs, sent at once.")] = 10_000,
    rate: Annotated[float, typer.Option(min=1, help="Tenant B's jobs per second.")] = 20.0,
    alone: Annotated[int, typer.Option(min=20, help="B's jobs in the 'alone' phase.")] = 200,
    function: Annotated[str, typer.Option(help="The function both tenants call.")] = "tiny",
    plot: Annotated[Path | None, typer.Option(help="Write B's round trips as a PNG.")] = None,
) -> None:
    """Tenant B's p50/p99 alone, during tenant A's spike, and in one shared queue."""
    with (
        tempfile.TemporaryDirectory(prefix="surge-fairness-") as folder,
        console.status(f"B alone, then during A's spike of {spike:,} jobs (twice)"),
    ):
        phases = measure(Path(folder), spike, rate, alone, function)
    console.print(_table(phases, spike))
    console.print(f"machine: {os.cpu_count()} CPUs; one worker process; one run; loopback")
    if plot is not None:
        _plot(phases, plot)
        console.print(f"plot: {plot}")


def main() -> None:
    """`python -m loadgen.bench.fairness`."""
    typer.run(bench)


if __name__ == "__main__":
    main()
