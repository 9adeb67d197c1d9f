"""PNG plots of a load run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loadgen.run.records import RunReport

__all__ = ["plot_latency", "plot_load", "write_plots"]


def _title(report: RunReport) -> str:
    return f"{report.config.profile} / {report.config.function} ({report.run_id})"


def plot_latency(report: RunReport, path: Path) -> Path:
    """Latency percentiles of the jobs completing in each second (log scale)."""
    points = [p for p in report.timeline if p.p50_ms is not None]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for field, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
        ax.plot(
            [p.t for p in points],
            [getattr(p, field) for p in points],
            style,
            label=field.removesuffix("_ms"),
        )
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("latency from scheduled send (ms)")
    if points:
        ax.set_yscale("log")
    ax.set_title(f"latency: {_title(report)}")
    ax.axvline(report.arrival_phase_s, color="grey", lw=0.8, label="arrivals end")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_load(report: RunReport, path: Path) -> Path:
    """Arrival/completion rates, backlog and ready replicas over time."""
    t = [p.t for p in report.timeline]
    fig, (rates, backlog) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    rates.plot(t, [p.arrivals for p in report.timeline], label="arrivals/s")
    rates.plot(t, [p.completions for p in report.timeline], label="completions/s")
    profile_t = [x for x, _ in report.config.profile_points]
    rates.plot(profile_t, [r for _, r in report.config.profile_points], "k:", label="profile")
    rates.set_ylabel("jobs/s")
    rates.legend(loc="upper left")
    rates.grid(alpha=0.3)
    rates.set_title(f"load: {_title(report)}")
    sampled = [p for p in report.timeline if p.backlog is not None]
    backlog.plot([p.t for p in sampled], [p.backlog for p in sampled], color="C3", label="backlog")
    backlog.set_ylabel("backlog (pending + ack pending)")
    backlog.set_xlabel("time since start (s)")
    backlog.grid(alpha=0.3)
    with_replicas = [p for p in report.timeline if p.replicas is not None]
    if with_replicas:
        replicas = backlog.twinx()
        replicas.step(
            [p.t for p in with_replicas],
            [p.replicas for p in with_replicas],
            where="post",
            color="C2",
            label="ready replicas",
        )
        replicas.set_ylabel("ready replicas")
        replicas.set_ylim(bottom=0, top=max(p.replicas or 0 for p in with_replicas) + 1)
        replicas.legend(loc="upper right")
    backlog.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(report: RunReport, out: Path) -> dict[str, str]:
    """Both plots into `out`; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    return {
        "latency_png": str(plot_latency(report, out / "latency.png")),
        "load_png": str(plot_load(report, out / "load.png")),
    }
