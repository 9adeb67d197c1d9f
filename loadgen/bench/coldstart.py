"""Cold-start phases of a worker, median of several starts, against a bare baseline.

    python -m loadgen.bench.coldstart --function remove-bg --runs 5

Each run starts `python -m function worker` against an embedded nats-server and reads
the phases (import, connect, fetch, prepare, session, warmup, hooks, attach, total) from
its ready heartbeat; each bare run starts a process that only opens the same ONNX
Runtime session and runs one inference. Prints medians and the ratio of the worker's
start-to-ready to the bare start, and writes `reports/coldstart-<time>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats
from function.local.processes import start_worker_process, stop_worker_processes, wait_ready
from loadgen.bench.baselines import bare_cold_start

__all__ = ["main", "measure"]


def measure(function: str, runs: int, max_batch: int, threads: int) -> dict[str, object]:
    """Median phases over `runs` worker starts, and the bare baseline's median."""
    model_dir = WorkerSettings().model_dir.resolve()
    env = {"SURGE_MODEL_DIR": str(model_dir), "SURGE_LOG_LEVEL": "WARNING"}
    if max_batch:  # 0: the worker's own choice (its defaults)
        env["SURGE_MAX_BATCH"] = str(max_batch)
    if threads:
        env["SURGE_INTRA_OP_THREADS"] = str(threads)
    phases: list[dict[str, float]] = []
    logs = Path(tempfile.mkdtemp(prefix="surge-coldstart-"))
    with EmbeddedNats(log_file=logs / "nats.log") as server:
        for run in range(runs):
            proc = start_worker_process(server.url, function, logs / f"worker-{run}.log", env)
            try:
                beat = asyncio.run(wait_ready(server.url, function, 1, timeout=300))[0]
            finally:
                stop_worker_processes([proc])
            phases.append(beat.cold_start_phases)
    bare = [bare_cold_start(function, threads, model_dir)[0] for _ in range(runs)]
    names = list(phases[0])
    medians = {name: statistics.median(p.get(name, 0.0) for p in phases) for name in names}
    bare_median = statistics.median(bare)
    return {
        "function": function,
        "runs": runs,
        "max_batch": max_batch,
        "threads": threads,
        "phases_median_s": medians,
        "bare_median_s": bare_median,
        "ratio": medians["total"] / bare_median,
        "all_runs": phases,
        "bare_runs": bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", default="remove-bg")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=0, help="0: the worker's choice")
    parser.add_argument("--threads", type=int, default=0, help="0: the worker's choice")
    args = parser.parse_args()
    record = measure(args.function, args.runs, args.max_batch, args.threads)
    table = Table(title=f"Cold start of {args.function}, median of {args.runs} starts")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    medians: dict[str, float] = record["phases_median_s"]  # type: ignore[assignment]
    for name, seconds in medians.items():
        table.add_row(name, f"{seconds:.3f}")
    table.add_row("bare session + one inference", f"{record['bare_median_s']:.3f}")
    table.add_row("ratio worker / bare", f"{record['ratio']:.2f}")
    console = Console()
    console.print(table)
    out = Path("reports") / f"coldstart-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    console.print(f"record: {out}")


if __name__ == "__main__":
    main()
