"""The demo's `timeline.png`: replicas and backlog over time, with the moments that matter.

    marks = demo_marks(report)   # {"jobs published": 0.0, "cold start: first worker": 0.2, ...}
    write_timeline(report, out / "timeline.png")

Time runs from the moment the spike was seen (the first scaler tick with a backlog), so
the "first result" mark sits at the report's `first_result_s`. Replicas and backlog are
counts: drawn as steps (the timeline holds change points), on whole-number axes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from scaler.plotting import integer_axis, mark, save_png
from scaler.stack import SpikeReport

__all__ = ["demo_marks", "timeline_figure", "write_timeline"]

PUBLISHED = "jobs published"
COLD_START = "cold start: first worker"
FIRST_RESULT = "first result"
BACK_TO_ZERO = "back to 0"


def _origin(report: SpikeReport) -> float:
    """Scaler time of the first tick that saw the spike's backlog (0 without one)."""
    return next((t for t, _, backlog in report.timeline if backlog > 0), 0.0)


def demo_marks(report: SpikeReport) -> dict[str, float]:
    """{label: seconds since the spike was published} of the moments the plot marks."""
    origin = _origin(report)
    marks: dict[str, float] = {}
    if any(backlog > 0 for _, _, backlog in report.timeline):
        marks[PUBLISHED] = 0.0
    started = next((t for t, replicas, _ in report.timeline if replicas > 0), None)
    if started is not None:
        marks[COLD_START] = started - origin
        back = next(
            (t for t, replicas, _ in report.timeline if t > started and replicas == 0), None
        )
        if back is not None:
            marks[BACK_TO_ZERO] = back - origin
    if report.first_result_s is not None:
        marks[FIRST_RESULT] = report.first_result_s
    return marks


def timeline_figure(report: SpikeReport) -> Figure:
    """Replicas (left, steps) and backlog (right, steps), the moments marked."""
    origin = _origin(report)
    times = [t - origin for t, _, _ in report.timeline]
    fig, left = plt.subplots(figsize=(10, 4.5))
    left.step(
        times,
        [r for _, r, _ in report.timeline],
        where="post",
        color="tab:blue",
        label="worker replicas",
    )
    left.set_xlabel("seconds since the spike was published")
    left.set_ylabel("worker replicas", color="tab:blue")
    integer_axis(left)
    left.set_ylim(top=max(report.peak_replicas, 1) + 0.5)
    right = left.twinx()
    right.step(
        times,
        [b for _, _, b in report.timeline],
        where="post",
        color="tab:orange",
        label="backlog",
    )
    right.set_ylabel("backlog (pending + in flight)", color="tab:orange")
    integer_axis(right)
    right.set_ylim(top=max((b for _, _, b in report.timeline), default=0) * 1.2 + 1)
    colors = {COLD_START: "tab:red", FIRST_RESULT: "tab:green"}
    marks = demo_marks(report)
    for label, x in marks.items():
        mark(left, x, label, colors.get(label, "0.3"), "right" if label == COLD_START else "left")
    if COLD_START in marks and FIRST_RESULT in marks:
        start, end = marks[COLD_START], marks[FIRST_RESULT]
        left.axvspan(start, end, color="tab:red", alpha=0.08)
        left.text(
            (start + end) / 2,
            0.04,
            f"cold start to first result: {end - start:.1f} s",
            transform=left.get_xaxis_transform(),
            ha="center",
            fontsize=8,
            color="tab:red",
        )
    left.set_title("Scale from zero and back: replicas and backlog")
    left.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_timeline(report: SpikeReport, path: Path) -> Path:
    """Draw `timeline_figure` into the PNG at `path`."""
    return save_png(timeline_figure(report), path)
