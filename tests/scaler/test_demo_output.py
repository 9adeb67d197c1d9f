"""What `surge demo` leaves: results named by number, photo and output, an index of every
job, and a timeline whose plotted data marks the cold start and the first result."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from function.contract.errors import ErrorCode
from function.contract.wire import (
    ErrorInfo,
    ImageOutput,
    JobStatus,
    Result,
    ScoresOutput,
    Timings,
)
from function.models.base import image_output
from scaler.demo_files import DemoIndex, save_results, write_index
from scaler.demo_plot import demo_marks, timeline_figure
from scaler.plotting import marks_of
from scaler.stack import SpikeReport

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _mask(size: tuple[int, int]) -> Result:
    return Result(
        job_id="unused",
        status=JobStatus.OK,
        function="remove-bg",
        outputs={"mask": image_output(Image.new("L", size, 128))},
    )


def _result(job_id: str, seconds: float, template: Result, **fields: object) -> Result:
    return template.model_copy(
        update={
            "job_id": job_id,
            "finished_at": T0 + timedelta(seconds=seconds),
            "timings": Timings(queued_ms=5.0, batch_size=2, inference_ms=90.0, total_ms=123.45),
            **fields,
        }
    )


async def _read(output: ImageOutput) -> bytes:
    """Inline outputs as they are; a referenced one is gone from the store."""
    if output.ref is not None:
        raise KeyError(output.ref)
    return output.payload()


async def test_results_are_numbered_named_and_indexed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sent = {"job-late": "astronaut", "job-first": "chelsea"}  # job-twin's is not known
    cutout = _mask((45, 30))
    cutout.outputs["../../cut out"] = image_output(Image.new("RGBA", (45, 30)))
    big = _mask((64, 64))
    big.outputs["cutout"] = ImageOutput(width=64, height=64, ref="outputs/late/cutout")
    failed = Result(
        job_id="x",
        status=JobStatus.ERROR,
        function="remove-bg",
        error=ErrorInfo(code=ErrorCode.BAD_IMAGE, message="<not an image>"),
    )
    results = [
        _result("job-late", 3.0, big),
        _result("job-first", 1.0, cutout),
        _result("job-twin", 2.0, _mask((20, 10))),
        _result("job-bad<b>", 4.0, failed),
        _result(
            "job-tiny",
            5.0,
            failed,
            status=JobStatus.OK,
            error=None,
            outputs={"scores": ScoresOutput(scores={"mean": 0.5})},
        ),
    ]
    rows = await save_results(results, out, sent, _read)
    assert [(r.n, r.job_id, r.photo) for r in rows] == [
        (1, "job-first", "chelsea"),
        (2, "job-twin", "photo"),
        (3, "job-late", "astronaut"),
        (4, "job-bad<b>", "photo"),
        (5, "job-tiny", "photo"),
    ]
    assert rows[0].files == ["1-chelsea-cut_out.png", "1-chelsea-mask.png"]  # no way out
    assert rows[2].files == ["3-astronaut-mask.png"] and rows[2].unsaved == ["cutout"]
    assert rows[3].status == "error" and rows[3].error == "bad_image"
    assert rows[4].scores == {"mean": 0.5} and rows[4].files == []
    assert rows[0].latency_ms == 123.5 and rows[0].batch_size == 2
    with Image.open(out / "3-astronaut-mask.png") as mask:
        assert mask.size == (64, 64)
    assert sorted(p.name for p in out.iterdir()) == [
        "1-chelsea-cut_out.png",
        "1-chelsea-mask.png",
        "2-photo-mask.png",
        "3-astronaut-mask.png",
    ]

    paths = write_index(DemoIndex(jobs=6, missing=1, rows=rows), out)
    index = DemoIndex.model_validate_json(paths["json"].read_text())
    assert index.missing == 1 and index.rows == rows
    with paths["csv"].open() as file:
        table = list(csv.DictReader(file))
    assert table[2] == {
        "n": "3",
        "job_id": "job-late",
        "photo": "astronaut",
        "status": "ok",
        "error": "",
        "latency_ms": "123.5",
        "queued_ms": "5.0",
        "batch_size": "2",
        "files": "3-astronaut-mask.png",
        "unsaved": "cutout",
    }
    page = paths["html"].read_text()
    assert "5 of 6 jobs answered, 1 missing" in page
    assert '<a href="3-astronaut-mask.png"><img src="3-astronaut-mask.png"' in page
    assert "job-bad&lt;b&gt;" in page and "job-bad<b>" not in page
    assert "cutout: not saved" in page


# Scaler time: idle, the spike seen at 1.0 s, a worker started at 1.2 s, a second at
# 1.4 s, the backlog drained by 12 s, both workers gone at 20 s; first result 4 s after
# the spike was published.
SPIKE = SpikeReport(
    jobs=48,
    answered=48,
    ok=48,
    first_result_s=4.0,
    all_results_s=11.0,
    back_to_zero_s=8.0,
    peak_replicas=2,
    timeline=[
        (0.0, 0, 0),
        (1.0, 0, 48),
        (1.2, 1, 48),
        (1.4, 2, 48),
        (6.0, 2, 30),
        (12.0, 2, 0),
        (20.0, 0, 0),
    ],
)


def test_timeline_marks_the_cold_start_and_the_first_result() -> None:
    marks = demo_marks(SPIKE)
    assert marks.keys() == {
        "jobs published",
        "cold start: first worker",
        "first result",
        "back to 0",
    }
    assert marks["jobs published"] == 0.0 and marks["first result"] == 4.0
    assert marks["cold start: first worker"] == pytest.approx(0.2)
    assert marks["back to 0"] == 19.0


def test_timeline_draws_whole_replicas_and_backlog_as_steps(figures: list[Figure]) -> None:
    fig = timeline_figure(SPIKE)
    figures.append(fig)
    left, right = fig.axes
    (replicas,) = [line for line in left.get_lines() if line.get_label() == "worker replicas"]
    (backlog,) = right.get_lines()
    assert replicas.get_drawstyle() == backlog.get_drawstyle() == "steps-post"
    x = np.asarray(replicas.get_xdata(), dtype=float)
    assert x.tolist() == pytest.approx([-1.0, 0.0, 0.2, 0.4, 5.0, 11.0, 19.0])
    assert np.asarray(replicas.get_ydata()).tolist() == [0, 0, 1, 2, 2, 2, 0]
    assert np.asarray(backlog.get_ydata()).tolist() == [0, 48, 48, 48, 30, 0, 0]
    for ax in (left, right):
        low, high = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert marks_of(left) == pytest.approx(demo_marks(SPIKE))


def test_timeline_without_a_spike_marks_nothing_it_did_not_see() -> None:
    idle = SpikeReport(
        jobs=0,
        answered=0,
        ok=0,
        first_result_s=None,
        all_results_s=None,
        back_to_zero_s=None,
        peak_replicas=0,
        timeline=[(0.0, 0, 0)],
    )
    assert demo_marks(idle) == {}
    fig = timeline_figure(idle)
    plt.close(fig)
    assert marks_of(fig.axes[0]) == {}
