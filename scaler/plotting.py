"""Plot helpers shared by the demo, the load reports and the simulator (matplotlib, Agg).

    fig, ax = plt.subplots()
    ax.step(t, replicas, where="post")
    integer_axis(ax)                 # no 0.5 replica ticks
    mark(ax, 12.3, "first result")   # a labelled vertical line

Counts (replicas, backlog, jobs per second) are drawn as steps; a series with holes
(`None`) becomes NaN, so matplotlib leaves a gap instead of drawing across it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = ["MARK_GID", "integer_axis", "mark", "marks_of", "save_png", "with_gaps"]

MARK_GID = "surge-mark:"
"""The `gid` prefix of every line `mark()` draws (then its label), so that tests and
readers can find them; the label is written on the plot, not in the legend."""


def save_png(fig: Figure, path: Path) -> Path:
    """Write `fig` to the PNG at `path` and free it."""
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def with_gaps(values: Sequence[float | int | None]) -> list[float]:
    """`values` as floats, NaN where a value is missing (matplotlib draws a gap there)."""
    return [float("nan") if v is None else float(v) for v in values]


def integer_axis(ax: Axes, *, bottom: float | None = 0) -> None:
    """Whole-number ticks on the y axis (counts: replicas, jobs), from `bottom` up and at
    least to 1 (an all-zero series would otherwise get ticks of 0.01). Call it after
    the data is drawn."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if bottom is not None:
        ax.set_ylim(bottom=bottom)
    low, high = ax.get_ylim()
    if high - low < 1:
        ax.set_ylim(top=low + 1)


def mark(
    ax: Axes, x: float, label: str, color: str = "0.3", side: Literal["left", "right"] = "left"
) -> Line2D:
    """A dashed vertical line at `x` with `label` written along it, near the top, on
    `side` of the line (two marks close together: one on each side)."""
    line = ax.axvline(x, color=color, ls="--", lw=1.0, label="_mark", gid=MARK_GID + label)
    ax.text(
        x,
        0.98,
        f" {label}",
        transform=ax.get_xaxis_transform(),
        rotation=90,
        va="top",
        ha="right" if side == "left" else "left",
        fontsize=8,
        color=color,
    )
    return line


def marks_of(ax: Axes) -> dict[str, float]:
    """{label: x} of the lines `mark()` drew on `ax`."""
    return {
        gid.removeprefix(MARK_GID): float(np.asarray(line.get_xdata(), dtype=float)[0])
        for line in ax.get_lines()
        if (gid := line.get_gid() or "").startswith(MARK_GID)
    }
