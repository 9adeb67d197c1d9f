"""`ModelSet`: one version per part of a batch, jobs pinned by id, the canary judged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from function.contract.rollout import routes_to_canary
from function.contract.wire import ModelInfo
from function.engine.modelset import ModelSet


class FakeModel:
    """A `BatchModel` that answers each sample with its version's number."""

    fast = True

    def __init__(self, version: str, value: float) -> None:
        self.info = ModelInfo(name="tiny", version=version)
        self.value = value

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        return np.full(len(samples), self.value)


def _jobs(count: int) -> list[Any]:
    return [
        SimpleNamespace(job_id=f"job-{i}", model=None, cache_key=None, attempts=1)
        for i in range(count)
    ]


class Canary(NamedTuple):
    """Two versions, the second a canary at some share, jobs split between them, and the
    rollbacks the set reported as (version, reason)."""

    v1: FakeModel
    v2: FakeModel
    models: ModelSet
    jobs: list[Any]
    reported: list[tuple[str, str]]


def _canary(share: float, min_jobs: int, jobs: int) -> Canary:
    v1, v2 = FakeModel("1" * 16, 1.0), FakeModel("2" * 16, 2.0)
    models = ModelSet(v1, max_error_rate=0.2, min_jobs=min_jobs)  # type: ignore[arg-type]
    models.serve(v1, v2, share)  # type: ignore[arg-type]
    reported: list[tuple[str, str]] = []
    models.on_failing = lambda version, reason: reported.append((version, reason))
    split = _jobs(jobs)
    models.split(split)
    return Canary(v1, v2, models, split, reported)


def test_a_batch_splits_by_version_and_pins_each_job() -> None:
    v1, v2 = FakeModel("1" * 16, 1.0), FakeModel("2" * 16, 2.0)
    models = ModelSet(v1)  # type: ignore[arg-type]
    models.serve(v1, v2, 0.3)  # type: ignore[arg-type]
    jobs = _jobs(200)
    parts = models.split(jobs)
    assert [model for model, _ in parts] == [v1, v2]  # stable first, never mixed
    for model, part in parts:
        assert all(job.model is model for job in part)
    canary = {job.job_id for job in parts[1][1]}
    assert canary == {job.job_id for job in jobs if routes_to_canary(job.job_id, 0.3)}
    assert models.split(_jobs(200))[1][1][0].job_id == parts[1][1][0].job_id  # the same again
    assert models.info == v1.info and models.run_batch([np.zeros(1)])[0] == 1.0


def test_a_failing_canary_stops_serving_and_is_reported_once() -> None:
    v1, v2, models, jobs, reported = _canary(1.0, min_jobs=20, jobs=40)
    for job in jobs[:15]:
        models.record(job, ok=True)
    for job in jobs[15:19]:
        models.record(job, ok=False)
    assert reported == [] and models.versions == [v1.info.version, v2.info.version]  # 19 seen
    models.record(jobs[19], ok=False)  # 5 of 20 failed: 25% > 20%
    assert [version for version, _ in reported] == [v2.info.version]
    assert "failed 5 of 20 jobs" in reported[0][1]
    assert models.versions == [v1.info.version]
    models.record(jobs[20], ok=False)  # late outcomes of its jobs change nothing
    models.serve(v1, v2, 1.0)  # type: ignore[arg-type]  # the record, before the rollback lands
    assert models.versions == [v1.info.version] and len(reported) == 1


def test_a_healthy_canary_and_stable_outcomes_are_not_judged() -> None:
    v1, v2, models, jobs, reported = _canary(0.5, min_jobs=5, jobs=100)
    for job in jobs:
        models.record(job, ok=job.model is v2)  # every stable job "fails": not the canary's
        assert reported == []
    assert models.versions == [v1.info.version, v2.info.version]


def test_the_result_cache_follows_the_stable_version_and_skips_the_canary() -> None:
    v1, v2 = FakeModel("1" * 16, 1.0), FakeModel("2" * 16, 2.0)
    models = ModelSet(v1)  # type: ignore[arg-type]
    stables: list[str] = []
    models.on_stable = stables.append
    models.serve(v1, v2, 0.5)  # type: ignore[arg-type]
    jobs = _jobs(50)
    for job in jobs:
        job.cache_key = f"key-{job.job_id}"
    models.split(jobs)
    for job in jobs:  # keyed (and so remembered) only when the stable version ran it
        assert (job.cache_key is not None) is (job.model is v1)
        assert models.on_stable_version(job.job_id) is (job.model is v1)
    models.serve(v2)  # type: ignore[arg-type]  # the promote
    assert stables == [v1.info.version, v2.info.version]


def test_a_job_retried_on_the_canary_counts_once() -> None:
    v1, v2, models, jobs, reported = _canary(1.0, min_jobs=5, jobs=5)
    for job in jobs[:4]:
        models.record(job, ok=True)
    flaky = jobs[4]
    models.record(flaky, ok=False)  # 1 of 5: 20%, not over
    for attempt in range(2, 6):  # its redeliveries fail too: still one job, one error
        flaky.attempts = attempt
        models.record(flaky, ok=False)
    assert reported == [] and models.versions == [v1.info.version, v2.info.version]


def test_a_canary_is_judged_against_the_stable_versions_failures_meanwhile() -> None:
    v1, v2, models, jobs, reported = _canary(0.5, min_jobs=20, jobs=400)
    stable = [job for job in jobs if job.model is v1]
    canary = [job for job in jobs if job.model is v2]
    for i, job in enumerate(stable[:100]):  # the stable version fails 30 of 100 (the GPU, say)
        models.record(job, ok=i % 10 >= 3)
    for i, job in enumerate(canary[:20]):  # the canary 8 of 20: 40%, 10 points over
        models.record(job, ok=i % 5 >= 2)
    assert reported == [] and models.versions == [v1.info.version, v2.info.version]
    models.serve(v1)  # type: ignore[arg-type]  # rolled back by hand: the counts start again
    models.serve(v1, v2, 0.5)  # type: ignore[arg-type]
    for job in stable[100:140]:  # the stable version healthy now
        models.record(job, ok=True)
    for i, job in enumerate(canary[20:40]):  # the same 40%: 40 points over the stable's 0%
        models.record(job, ok=i % 5 >= 2)
    assert [version for version, _ in reported] == [v2.info.version]
    assert models.versions == [v1.info.version]
    reason = reported[0][1]
    assert "failed 8 of 20 jobs" in reason and "stable version's 0 of 40" in reason
