"""The rollout timeline bench: a real rollout under load, and its arithmetic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from function.contract.wire import JobStatus, ModelInfo, Result, Timings
from loadgen.bench.rollout import _timeline, measure, plot

pytestmark = pytest.mark.timeout(90)


def _result(job_id: str, version: str) -> Result:
    model = ModelInfo(name="tiny", version=version, providers=["CPUExecutionProvider"])
    return Result(
        job_id=job_id,
        status=JobStatus.OK,
        function="tiny",
        model=model,
        timings=Timings(),
        trace_id="0" * 32,
    )


def test_the_timeline_counts_versions_per_second_gaps_and_duplicates() -> None:
    sent = {f"j{i}": i * 0.5 for i in range(8)}  # 2 a second for 4 s
    versions = ["a", "a", "a", "b", "a", "b", "b", "b"]
    results = {f"j{i}": (i * 0.5 + 0.1, _result(f"j{i}", v)) for i, v in enumerate(versions)}
    del results["j7"]
    answers = Counter({job_id: 1 for job_id in results} | {"j0": 2})
    timeline = _timeline(2.0, 4.0, 0.5, 1.0, 3.0, "a", "b", sent, results, answers)
    assert timeline.per_second == [
        {"a": 2, "b": 0},
        {"a": 1, "b": 1},
        {"a": 1, "b": 1},
        {"a": 0, "b": 1},
    ]
    assert timeline.canary_seen_share == pytest.approx(0.5)  # jobs sent in [2, 3)
    assert timeline.first_new_s == pytest.approx(1.6) and timeline.last_old_s == pytest.approx(2.1)
    assert timeline.longest_gap_ms == pytest.approx(500.0)
    assert timeline.answered_twice == 1 and timeline.unanswered == 1


async def test_a_rollout_under_load_loses_nothing_and_switches_at_the_promote(
    tmp_path: Path, model_dir: Path
) -> None:
    timeline = await measure(
        rate=25, seconds=5, canary=0.5, canary_at=1.0, promote_at=3.0, workers=1
    )
    assert timeline.unanswered == 0 and timeline.answered_twice == 0
    assert timeline.stable != timeline.new
    assert all(counts.get(timeline.new, 0) == 0 for counts in timeline.per_second[:1])
    assert all(counts.get(timeline.stable, 0) == 0 for counts in timeline.per_second[4:])
    assert 0.2 < timeline.canary_seen_share < 0.8  # 50% of ~25 jobs, hash-routed
    assert plot(timeline, tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
