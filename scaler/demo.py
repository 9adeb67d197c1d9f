"""`surge demo` (what `make demo` runs): a spike of real jobs from zero workers and back.

Starts nats-server and the scaler with no worker running, publishes a burst of
background-removal jobs made from real photos, lets the scaler start workers with the
same decision code KEDA would consume and drain them after the cooldown. Prints a
summary with the replica count over time and leaves, in the output folder, the masks
and cut-outs named `<n>-<photo>-<output>.png`, `index.html` (also `.csv`, `.json`: every
job with its photo, status, latency and files), `timeline.png` and `report.json`.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from function.contract.settings import WorkerSettings
from function.contract.wire import JobStatus
from function.local.nats_server import EmbeddedNats
from function.models import fetch_photos
from scaler.bill import bill_table, comparisons, make_bill, usage_of
from scaler.demo_files import DemoIndex, save_from, write_index
from scaler.demo_plot import write_timeline
from scaler.local import LocalConfig
from scaler.stack import SpikeReport, spike_demo

__all__ = ["run_demo", "summarize"]

_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(points: list[tuple[float, int]], width: int = 30) -> str:
    """A step series of (time, value) change points as a one-line bar chart over time."""
    if not points:
        return ""
    end = points[-1][0] or 1.0
    values, index = [], 0
    for step in range(width):
        moment = end * step / (width - 1)
        while index + 1 < len(points) and points[index + 1][0] <= moment:
            index += 1
        values.append(points[index][1])
    top = max(max(values), 1)
    return "".join(_BARS[round(v / top * (len(_BARS) - 1))] for v in values)


def summarize(report: SpikeReport) -> dict[str, Any]:
    """The report's figures as plain JSON."""
    results = list(report.results.values())
    latencies = [r.timings.total_ms for r in results]
    batches = Counter(r.timings.batch_size for r in results if r.status is JobStatus.OK)
    errors = Counter(r.error.code.value for r in results if r.error)

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies else 0.0

    return {
        "jobs": report.jobs,
        "ok": report.ok,
        "errors": dict(errors),
        "missing": report.jobs - report.answered,
        "latency_ms": {"p50": pct(50), "p99": pct(99), "max": max(latencies, default=0.0)},
        "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "throughput_jobs_per_s": report.answered / report.elapsed_s if report.elapsed_s else 0.0,
        "first_result_from_zero_s": report.first_result_s,
        "all_results_s": report.all_results_s,
        "back_to_zero_after_last_result_s": report.back_to_zero_s,
        "peak_replicas": report.peak_replicas,
        "timeline": [{"t": t, "replicas": r, "backlog": b} for t, r, b in report.timeline],
    }


def _table(summary: dict[str, Any], report: SpikeReport) -> Table:
    table = Table(title="Surge demo: a spike from zero workers and back")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    latency = summary["latency_ms"]
    replicas = [(t, r) for t, r, _ in report.timeline]
    backlog = [(t, b) for t, _, b in report.timeline]
    rows = [
        ("jobs published", summary["jobs"]),
        ("answered ok", summary["ok"]),
        ("answered error", sum(summary["errors"].values())),
        ("missing", summary["missing"]),
        ("latency p50 / p99 (ms)", f"{latency['p50']:.0f} / {latency['p99']:.0f}"),
        ("throughput (jobs/s)", f"{summary['throughput_jobs_per_s']:.2f}"),
        ("batch sizes seen", summary["batch_sizes"]),
        ("first result, from 0 workers (s)", seconds(report.first_result_s)),
        ("all results (s)", seconds(report.all_results_s)),
        ("back to 0 after last result (s)", seconds(report.back_to_zero_s)),
        ("peak replicas", report.peak_replicas),
        (
            f"replicas over {report.timeline[-1][0]:.0f} s" if report.timeline else "replicas",
            sparkline(replicas),
        ),
        ("backlog over the same time", sparkline(backlog)),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def run_demo(
    *,
    jobs: int,
    out: Path,
    max_workers: int,
    function: str,
    console: Console,
    cooldown_s: float = 5.0,
) -> bool:
    """Run the demo; True when every job was answered ok and the stack went back to zero."""
    out.mkdir(parents=True, exist_ok=True)
    model_dir = WorkerSettings().model_dir.resolve()
    with console.status("fetching the models and photos"):
        photo_files = fetch_photos(model_dir)
        photos = [p.read_bytes() for p in photo_files.values()]
    config = LocalConfig(
        function=function,
        max_workers=max_workers,
        cooldown_s=cooldown_s,
        log_dir=out,
        # The workers' own defaults: runners, threads and batch size from the machine.
        worker_env={"SURGE_MODEL_DIR": str(model_dir)},
        metadata={"targetDrainSeconds": "10", "coldStartSeconds": "5"},
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("replicas {task.fields[replicas]}  backlog {task.fields[backlog]}"),
        TimeElapsedColumn(),
        console=console,
    )
    with EmbeddedNats(log_file=out / "nats-server.log") as server, progress:
        console.print(f"nats-server with JetStream on {server.url}; 0 workers running")
        task = progress.add_task("results", total=jobs, replicas=0, backlog=0)

        def on_progress(done: int, replicas: int, backlog: int) -> None:
            progress.update(task, completed=done, replicas=replicas, backlog=backlog)

        report = asyncio.run(
            spike_demo(
                server.url,
                config,
                jobs,
                0.0,
                photos,
                wait_s=600.0,
                outputs=("mask", "cutout") if function == "remove-bg" else (),
                on_progress=on_progress,
            )
        )
        progress.update(task, completed=report.answered)
        names = list(photo_files)
        sent = {job_id: names[index] for job_id, index in report.inputs.items()}
        rows = asyncio.run(save_from(server.url, report.results.values(), out, sent))
    summary = summarize(report)
    index = write_index(DemoIndex(jobs=jobs, missing=summary["missing"], rows=rows), out)
    write_timeline(report, out / "timeline.png")
    usage = usage_of(report)
    bill = make_bill(usage)
    others = comparisons(usage, bill)  # KEDA's defaults for the same arrivals, simulated
    summary |= {"usage": usage.model_dump(), "bill": bill.model_dump(), "compared": others}
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    console.print(_table(summary, report))
    console.print(bill_table(bill, others))
    console.print(f"at another price: surge cost {out}/report.json --price-per-gpu-hour P")
    files = sum(len(row.files) for row in rows)
    console.print(
        f"in {out}/: {index['html'].name} (also .csv, .json) lists every job with its photo, "
        f"status, latency and outputs; {files} output files named <n>-<photo>-<output>.png; "
        "timeline.png; report.json"
    )
    return report.ok == jobs and report.back_to_zero_s is not None
