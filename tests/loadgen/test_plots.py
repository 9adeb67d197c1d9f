"""The plotted data of `latency.png`, `load.png` and `simulation.png`, read from the
matplotlib artists (not pixels): gaps, steps, whole-number axes, marks, one panel each."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadgen.report.plots import latency_figure, load_figure, run_marks
from loadgen.run.profiles import build_profile
from loadgen.sim import POLICIES, run_simulation
from loadgen.sim.report import FIRST_READY, simulation_figure
from scaler.plotting import marks_of
from tests.loadgen.samples import point, run_report

# A scale from zero: no replica until the sample at the end of second 1; nothing
# completes in seconds 0 and 3; no sample at all in second 4.
TIMELINE = [
    point(0, arrivals=5, backlog=5, replicas=0),
    point(1, arrivals=4, completions=2, backlog=7, replicas=1),
    point(2, arrivals=6, completions=5, backlog=8, replicas=2),
    point(3, arrivals=5, backlog=13, replicas=2),
    point(4, arrivals=0, completions=9),
    point(5, completions=4, backlog=0, replicas=1),
]


def _line(ax: Axes, label: str) -> tuple[list[float], list[float], str]:
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    x = np.asarray(line.get_xdata(), dtype=float).tolist()
    y = np.asarray(line.get_ydata(), dtype=float).tolist()
    return x, y, str(line.get_drawstyle())


def _whole_ticks(ax: Axes) -> bool:
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def test_latency_leaves_a_gap_where_nothing_completed(figures: list[Figure]) -> None:
    fig = latency_figure(run_report(TIMELINE))
    figures.append(fig)
    (ax,) = fig.axes
    x, y, _ = _line(ax, "p50")
    assert x == [0, 1, 2, 3, 4, 5]
    assert [math.isnan(v) for v in y] == [True, False, False, True, False, False]
    assert y[1] == 101.0 and y[2] == 102.0
    (line,) = [x for x in ax.get_lines() if x.get_label() == "p99"]
    assert line.get_marker() not in (None, "None", "")  # a lone second still shows
    assert marks_of(ax) == {
        "first result": 1.0,
        "first replica ready (from 0)": 2.0,
        "arrivals end": 4.0,
    }


def test_load_draws_counts_as_steps_on_whole_number_axes(figures: list[Figure]) -> None:
    fig = load_figure(run_report(TIMELINE))
    figures.append(fig)
    rates, backlog, replicas = fig.axes
    x, y, style = _line(rates, "arrivals/s")
    assert style == "steps-post"
    assert x == [0, 1, 2, 3, 4, 5, 6] and y == [5, 4, 6, 5, 0, 0, 0]  # the last second drawn
    assert _line(rates, "completions/s")[1] == [0, 2, 5, 0, 9, 4, 4]
    x, y, style = _line(backlog, "backlog")
    assert style == "steps-post"
    assert x == [1, 2, 3, 4, 5, 6]  # sampled at each second's end
    assert y[:4] == [5, 7, 8, 13] and math.isnan(y[4]) and y[5] == 0
    x, y, style = _line(replicas, "ready replicas")
    assert style == "steps-post" and y[:4] == [0, 1, 2, 2] and math.isnan(y[4])
    for ax in (rates, backlog, replicas):
        assert _whole_ticks(ax), ax.get_yticks()
    assert set(marks_of(rates)) == {"first result", "first replica ready (from 0)", "arrivals end"}


def test_an_idle_count_still_gets_whole_number_ticks(figures: list[Figure]) -> None:
    idle = [point(t, arrivals=3, completions=3, backlog=0, replicas=1) for t in range(4)]
    fig = load_figure(run_report(idle))
    figures.append(fig)
    for ax in fig.axes:
        assert _whole_ticks(ax), ax.get_yticks()


def test_marks_only_what_happened() -> None:
    warm = [point(0, arrivals=3, backlog=3, replicas=1), point(1, completions=3, replicas=1)]
    assert run_marks(run_report(warm)) == {"first result": 1.0, "arrivals end": 4.0}
    assert run_marks(run_report([point(0, arrivals=3)])) == {"arrivals end": 4.0}


def test_simulation_gives_each_policy_its_own_panel(figures: list[Figure]) -> None:
    profile = build_profile("marketing-spike", rate=2, factor=20, duration=300)
    report = run_simulation(profile, tail_s=120)
    fig = simulation_figure(report)
    figures.append(fig)
    titled = {ax.get_title(loc="left").split(":")[0]: ax for ax in fig.axes}
    assert set(POLICIES) <= set(titled)
    for result in report.results:
        ax = titled[result.policy]
        x, y, style = _line(ax, "replicas")
        assert style == "steps-post"
        assert y == [p.replicas for p in result.timeline] and x == [p.t for p in result.timeline]
        assert _line(ax, "ready")[1] == [p.ready for p in result.timeline]
        assert _whole_ticks(ax)
        if result.first_ready_s is not None:
            assert marks_of(ax) == {FIRST_READY: result.first_ready_s}
    panels = [titled[p] for p in POLICIES]
    assert len({ax.get_ylim() for ax in panels}) == 1  # one scale: panels compare at a glance
