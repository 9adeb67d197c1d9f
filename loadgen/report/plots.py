"""PNG plots of a load run (matplotlib, Agg backend: no display needed).

    fig = latency_figure(report)      # inspect, or
    write_plots(report, out)          # latency.png and load.png

Counts per second (arrivals, completions, backlog, ready replicas) are steps on
whole-number axes; a second without completions (or without a sample) is a gap, never
a line drawn across it. Vertical lines mark the first result, the first replica ready
after a scale from zero, and the end of the arrivals.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadgen.run.records import RunReport, TimelinePoint
from scaler.plotting import integer_axis, mark, save_png, with_gaps

__all__ = [
    "latency_figure",
    "load_figure",
    "plot_latency",
    "plot_load",
    "run_marks",
    "write_plots",
]

FIRST_RESULT = "first result"
FIRST_READY = "first replica ready (from 0)"
ARRIVALS_END = "arrivals end"


def _title(report: RunReport) -> str:
    return f"{report.config.profile} / {report.config.function} ({report.run_id})"


def run_marks(report: RunReport) -> dict[str, float]:
    """{label: run second} of the moments the plots mark."""
    marks: dict[str, float] = {}
    first = next((p.t for p in report.timeline if p.completions), None)
    if first is not None:
        marks[FIRST_RESULT] = float(first)
    sampled = [p for p in report.timeline if p.replicas is not None]
    if sampled and sampled[0].replicas == 0:
        ready = next((p for p in sampled if p.replicas), None)
        if ready is not None:
            marks[FIRST_READY] = float(ready.t + 1)  # sampled at the second's end
    marks[ARRIVALS_END] = report.arrival_phase_s
    return marks


def _mark_all(ax: Axes, report: RunReport) -> None:
    colors = {FIRST_RESULT: "tab:green", FIRST_READY: "tab:red"}
    for label, x in run_marks(report).items():
        mark(ax, x, label, colors.get(label, "0.4"), "right" if label == FIRST_READY else "left")


def _steps(ax: Axes, t: list[float], values: list[float], label: str, lw: float) -> None:
    """Per-second counts as steps over [t, t+1): the last second is drawn to its end."""
    if t:
        t, values = [*t, t[-1] + 1], [*values, values[-1]]
    ax.step(t, values, where="post", label=label, lw=lw)


def latency_figure(report: RunReport) -> Figure:
    """Latency percentiles of the jobs completing in each second (log scale), with gaps."""
    t = [float(p.t) for p in report.timeline]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for field, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
        values = with_gaps([getattr(p, field) for p in report.timeline])
        ax.plot(t, values, style, marker=".", label=field.removesuffix("_ms"))
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    if any(p.p50_ms is not None for p in report.timeline):
        ax.set_yscale("log")
    ax.set_title(f"latency: {_title(report)}")
    ax.set_xlim(0, max(len(report.timeline), 1))
    _mark_all(ax, report)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _samples(timeline: list[TimelinePoint], field: str) -> tuple[list[float], list[float]]:
    """A 1 s sample series at its sampling moments (each second's end), NaN where none."""
    return [p.t + 1.0 for p in timeline], with_gaps([getattr(p, field) for p in timeline])


def load_figure(report: RunReport) -> Figure:
    """Arrival/completion counts per second (top); backlog and ready replicas (bottom)."""
    t = [float(p.t) for p in report.timeline]
    fig, (rates, backlog) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    # Arrivals wider, beneath: where completions keep up, both stay visible.
    _steps(rates, t, [float(p.arrivals) for p in report.timeline], "arrivals/s", lw=3.0)
    _steps(rates, t, [float(p.completions) for p in report.timeline], "completions/s", lw=1.2)
    profile_t = [x for x, _ in report.config.profile_points]
    rates.plot(profile_t, [r for _, r in report.config.profile_points], "k:", label="profile")
    rates.set_ylabel("jobs/s")
    integer_axis(rates)
    rates.grid(alpha=0.3)
    rates.set_title(f"load: {_title(report)}")
    _mark_all(rates, report)
    rates.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    backlog.step(*_samples(report.timeline, "backlog"), where="post", color="C3", label="backlog")
    backlog.set_xlabel("time since start (s)")
    integer_axis(backlog)
    backlog.grid(alpha=0.3)
    if any(p.replicas is not None for p in report.timeline):
        replicas = backlog.twinx()
        replicas.step(
            *_samples(report.timeline, "replicas"),
            where="post",
            color="C2",
            label="ready replicas",
        )
        replicas.set_ylabel("ready replicas", color="C2")
        integer_axis(replicas)
        replicas.set_ylim(top=max(p.replicas or 0 for p in report.timeline) + 1)
    backlog.set_ylabel("backlog (pending + ack pending)", color="C3")
    fig.tight_layout()
    return fig


def plot_latency(report: RunReport, path: Path) -> Path:
    """`latency_figure` as a PNG at `path`."""
    return save_png(latency_figure(report), path)


def plot_load(report: RunReport, path: Path) -> Path:
    """`load_figure` as a PNG at `path`."""
    return save_png(load_figure(report), path)


def write_plots(report: RunReport, out: Path) -> dict[str, str]:
    """Both plots into `out`; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    return {
        "latency_png": str(plot_latency(report, out / "latency.png")),
        "load_png": str(plot_load(report, out / "load.png")),
    }
