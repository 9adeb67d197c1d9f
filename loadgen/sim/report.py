"""The simulator's outputs: assumptions, a policy table, a PNG of replicas and backlog.

`simulation.png` is a small-multiples plot: the arrival rate, then one panel per policy
(replicas and ready replicas as steps on a shared whole-number axis, backlog on a shared
log axis, the first ready replica marked), so that no policy hides another.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from rich.table import Table

from loadgen.sim.params import PolicyResult, SimReport
from scaler.plotting import integer_axis, mark, save_png

__all__ = ["plot_simulation", "policy_table", "simulation_figure", "write_simulation"]


FIRST_READY = "first new replica ready"


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


def _panel(ax: Axes, result: PolicyResult, top: int, backlog_top: float) -> Axes:
    """One policy: replicas and ready replicas (steps, left), backlog (shaded steps, log,
    right), the first replica it asked for marked when ready."""
    t = [p.t for p in result.timeline]
    ax.step(t, [p.replicas for p in result.timeline], where="post", label="replicas")
    ax.step(t, [p.ready for p in result.timeline], where="post", ls="--", label="ready")
    integer_axis(ax)
    ax.set_ylim(top=top + 0.5)
    ax.set_ylabel("replicas")
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{result.policy}: {result.gpu_seconds / 3600:,.2f} GPU-h, "
        f"p99 {_seconds(result.latency_p99_s)} s",
        loc="left",
        fontsize=9,
    )
    if result.first_ready_s is not None:
        mark(ax, result.first_ready_s, FIRST_READY, "tab:red")
    backlog = ax.twinx()
    backlog.fill_between(
        t,
        0.1,
        [max(p.backlog, 0.1) for p in result.timeline],
        step="post",
        color="C3",
        alpha=0.25,
        lw=0,
        label="backlog",
    )
    backlog.set_yscale("log")
    backlog.set_ylim(0.1, backlog_top)
    backlog.set_ylabel("backlog (log)", color="C3")
    return backlog


def simulation_figure(report: SimReport) -> Figure:
    """The arrival rate on top, then one panel per policy on shared axes."""
    count = len(report.results)
    fig, axes = plt.subplots(
        count + 1, 1, figsize=(11, 1.9 * (count + 1) + 0.6), sharex=True, squeeze=False
    )
    rate, *panels = axes[:, 0]
    rate.plot(*zip(*report.profile_points, strict=True), "k-", lw=1)
    rate.set_ylabel("jobs/s")
    rate.set_title(f"simulated {report.profile}: arrival rate, then each policy", loc="left")
    rate.grid(alpha=0.3)
    top = max((r.peak_replicas for r in report.results), default=1)
    backlog_top = max((r.peak_backlog for r in report.results), default=1.0) * 2 + 1
    backlogs = [
        _panel(ax, result, max(top, 1), backlog_top)
        for ax, result in zip(panels, report.results, strict=True)
    ]
    if panels:
        handles = [*panels[0].get_legend_handles_labels()[0], *backlogs[0].collections]
        rate.legend(handles=handles, loc="upper right", fontsize=8, title="in each panel")
        panels[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def plot_simulation(report: SimReport, path: Path) -> Path:
    """`simulation_figure` as a PNG at `path`."""
    return save_png(simulation_figure(report), path)


def write_simulation(report: SimReport, out: Path) -> dict[str, str]:
    """`simulation.json` and `simulation.png` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulation.json").write_text(report.model_dump_json(indent=2))
    return {
        "json": str(out / "simulation.json"),
        "png": str(plot_simulation(report, out / "simulation.png")),
    }
