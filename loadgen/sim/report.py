"""The simulator's outputs: assumptions, a policy table, a PNG of replicas and backlog."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from rich.table import Table

from loadgen.sim.params import SimReport

__all__ = ["plot_simulation", "policy_table", "write_simulation"]


def _seconds(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def policy_table(report: SimReport) -> Table:
    """One row per policy: cost, latency, backlog, replicas."""
    oracle = next((r for r in report.results if r.policy == "oracle"), None)
    table = Table(title=f"simulated {report.profile} over {report.horizon_s:,.0f} s")
    columns = ["policy", "GPU-h", "cost", "x oracle", "p50 s", "p99 s", "max s"]
    columns += ["peak backlog", "peak replicas", "unserved"]
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in report.results:
        ratio = (
            f"{r.gpu_seconds / oracle.gpu_seconds:.2f}" if oracle and oracle.gpu_seconds else "-"
        )
        table.add_row(
            r.policy,
            f"{r.gpu_seconds / 3600:,.2f}",
            f"{r.cost:,.2f}",
            ratio,
            _seconds(r.latency_p50_s),
            _seconds(r.latency_p99_s),
            _seconds(r.latency_max_s),
            f"{r.peak_backlog:,.0f}",
            str(r.peak_replicas),
            f"{r.unserved:,.0f}",
        )
    return table


def plot_simulation(report: SimReport, path: Path) -> Path:
    """Replicas (top) and backlog (bottom) over time for every policy."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for result in report.results:
        t = [p.t for p in result.timeline]
        top.step(t, [p.replicas for p in result.timeline], where="post", label=result.policy)
        bottom.plot(t, [max(p.backlog, 0.1) for p in result.timeline], label=result.policy)
    rate = top.twinx()
    rate.plot(*zip(*report.profile_points, strict=True), "k:", lw=1, label="arrival rate")
    rate.set_ylabel("arrival rate (jobs/s)")
    top.set_ylabel("replicas (incl. starting)")
    top.set_title(f"simulated {report.profile}: replicas and backlog per policy")
    top.legend(loc="upper right", fontsize=8)
    top.grid(alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("backlog (jobs, log)")
    bottom.set_xlabel("time (s)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_simulation(report: SimReport, out: Path) -> dict[str, str]:
    """`simulation.json` and `simulation.png` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(report.model_dump_json(indent=2))
    return {
        "json": str(out / "simulation.json"),
        "png": str(plot_simulation(report, out / "simulation.png")),
    }
