"""The batch size chosen at warmup on the real session, kept for later starts."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from function.contract.settings import WorkerSettings
from function.contract.wire import ModelInfo
from function.models import TinyTask, load_model
from function.models.loader import LoadedModel
from function.models.tuning import MIN_GAIN, choose_batch, tuned_batch
from function.models.warmup import (
    FAST_RUN_MS,
    FAST_RUNS,
    SLOW_RUN_MS,
    SLOW_RUNS,
    ModelAdapter,
    load_and_warm,
)


@pytest.fixture
def tiny(tmp_path: Path) -> LoadedModel:
    return load_model(TinyTask(), cache_dir=tmp_path, providers=("cpu",))


def test_the_climb_keeps_the_size_with_the_least_time_per_image(tiny: LoadedModel) -> None:
    choice = choose_batch(tiny, runners=2, max_batch=8)
    sizes = sorted(choice.per_image_ms)
    assert sizes[0] == 1 and all(b == 2 * a for a, b in itertools.pairwise(sizes))
    assert choice.max_batch in choice.per_image_ms and choice.max_batch <= 8
    best = choice.per_image_ms[choice.max_batch]
    # every size tried before the chosen one was slower per image by the required gain
    assert all(
        choice.per_image_ms[s] * (1 - MIN_GAIN) >= best for s in sizes if s < choice.max_batch
    )
    assert choose_batch(tiny, runners=1, max_batch=1).max_batch == 1


def test_the_choice_is_kept_and_read_back(tiny: LoadedModel, tmp_path: Path) -> None:
    first, cached = tuned_batch(tiny, 2, 1, 4, tmp_path)
    assert not cached
    again, cached = tuned_batch(tiny, 2, 1, 4, tmp_path)
    assert cached and again == first
    other, cached = tuned_batch(tiny, 1, 1, 4, tmp_path)  # another configuration: measured
    assert not cached and other.max_batch <= 4
    for path in (tmp_path / "tuning").iterdir():
        path.write_text("{not json")
    _, cached = tuned_batch(tiny, 2, 1, 4, tmp_path)  # a garbled file is measured again
    assert not cached


def test_load_and_warm_resolves_runners_threads_and_batch(model_dir: Path, tmp_path: Path) -> None:
    auto = WorkerSettings(function="tiny", model_dir=model_dir, providers=["cpu"])
    warmed = load_and_warm(auto, [], {})
    assert warmed.settings.runners >= 1 and warmed.settings.intra_op_threads == 1
    assert 1 <= warmed.settings.max_batch <= 8 and warmed.warmup_ms
    explicit = auto.model_copy(update={"runners": 1, "intra_op_threads": 2, "max_batch": 3})
    warmed = load_and_warm(explicit, [], {})
    assert (warmed.settings.runners, warmed.settings.intra_op_threads) == (1, 2)
    assert warmed.settings.max_batch == 3 and sorted(warmed.warmup_ms) == [1, 3]


def test_surge_models_tune_keeps_the_choice_for_workers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from function.cli import app

    result = CliRunner().invoke(app, ["models", "tune", "-f", "tiny", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "runner(s)" in result.output and "max_batch" in result.output
    kept = list((tmp_path / "tuning").glob("*.json"))
    assert len(kept) == 1
    settings = WorkerSettings(function="tiny", model_dir=tmp_path)
    assert load_and_warm(settings, [], {}).warmup_ms  # the kept choice, warmed


def test_a_kept_choice_is_not_warmed_when_jobs_are_waiting(
    tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuned_batch(tiny, 2, 1, 4, tmp_path)  # measured and kept
    runs: list[int] = []
    real_run = tiny.run_batch
    monkeypatch.setattr(
        tiny, "run_batch", lambda samples: runs.append(len(samples)) or real_run(samples)
    )
    choice, cached = tuned_batch(tiny, 2, 1, 4, tmp_path, warm=False)
    assert cached and runs == []  # the waiting jobs' first batch warms the session
    tuned_batch(tiny, 2, 1, 4, tmp_path)
    assert runs == [choice.max_batch] * 2  # otherwise one warm run per runner
    runs.clear()
    fresh = tmp_path / "elsewhere"
    tuned_batch(tiny, 2, 1, 4, fresh, warm=False)
    assert runs  # nothing kept yet: the climb measures, jobs waiting or not


def test_load_and_warm_skips_the_warm_run_only_for_a_kept_choice_with_jobs_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = WorkerSettings(function="tiny", model_dir=tmp_path, providers=["cpu"])
    with caplog.at_level("INFO", logger="surge.warmup"):
        first = load_and_warm(settings, [], {}, jobs_waiting=lambda: True)
    assert "no synthetic warm run" not in caplog.text  # the first start had to measure
    assert "batch 1 warmed only" not in caplog.text  # every candidate size was timed
    with caplog.at_level("INFO", logger="surge.warmup"):
        again = load_and_warm(settings, [], {}, jobs_waiting=lambda: True)
    assert "no synthetic warm run" in caplog.text
    assert (
        again.warmup_ms == first.warmup_ms and again.settings.max_batch == first.settings.max_batch
    )


def test_an_explicit_max_batch_warms_batch_one_only_when_jobs_are_waiting(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = WorkerSettings(function="tiny", model_dir=model_dir, providers=["cpu"], max_batch=4)
    assert sorted(load_and_warm(settings, [], {}).warmup_ms) == [1, 4]

    def slow_answer() -> bool:  # the load waits for NATS to say whether jobs wait
        time.sleep(0.5)
        return True

    phases: dict[str, float] = {}
    with caplog.at_level("INFO", logger="surge.warmup"):
        waiting = load_and_warm(settings, [], phases, jobs_waiting=slow_answer)
    assert sorted(waiting.warmup_ms) == [1] and waiting.settings.max_batch == 4
    assert "batch 1 warmed only" in caplog.text
    assert phases["warmup"] < 0.4  # the wait for the answer is not warmup
    sizes = settings.model_copy(update={"warmup_batch_sizes": [2, 4]})  # asked for: as asked
    assert sorted(load_and_warm(sizes, [], {}, jobs_waiting=lambda: True).warmup_ms) == [2, 4]


def test_a_model_is_fast_only_when_a_full_batch_was_timed_under_the_bar(tiny: LoadedModel) -> None:
    assert ModelAdapter(tiny, {1: 0.01, 8: 0.02}, 8).fast
    assert not ModelAdapter(tiny, {1: 0.01}, 8).fast  # batch 1 alone says nothing of 8
    assert not ModelAdapter(tiny, {1: 0.01, 8: 0.9}, 8).fast
    assert ModelAdapter(tiny, {1: 0.01}, 1).fast
    assert not ModelAdapter(tiny, {}, 1).fast


def test_a_model_warmed_on_batch_one_turns_fast_when_full_batches_it_serves_are_quick(
    tiny: LoadedModel,
) -> None:
    """A worker with `max_batch` set that starts on waiting jobs warms batch 1 only: the
    batches it then serves must be able to show its model is cheaper than a thread hop."""
    adapter = ModelAdapter(tiny, {1: 0.01}, 8)
    sample = np.zeros((1, 8, 8), dtype=np.float32)
    for _ in range(20):
        adapter.run_batch([sample] * 7)
    assert not adapter.fast  # short batches say nothing of a full one
    for _ in range(20):  # two in a row under the bar; twenty allow for a busy machine
        adapter.run_batch([sample] * 8)
    assert adapter.fast


@pytest.mark.parametrize(
    ("fast", "runs", "after"),
    [
        (False, [(8, 0.4)], False),  # one quick full batch is not enough
        (False, [(8, 0.4), (8, 0.3)], True),
        (False, [(8, 0.4), (8, 1.0), (8, 0.3)], False),  # not in a row
        (False, [(8, 1.0), (8, 1.0)], False),  # between the bars: as it was
        (True, [(8, 1.0), (8, 1.0), (8, 1.0)], True),
        (False, [(7, 0.1), (7, 0.1), (7, 0.1)], False),  # not full batches
        (True, [(1, 2.5), (1, 2.5)], True),  # two slow runs may be the machine
        (True, [(1, 2.5), (1, 2.5), (1, 2.5)], False),
        (True, [(1, 2.5), (1, 0.1), (1, 2.5), (1, 2.5)], True),  # not in a row
        (True, [(8, 3.0)] * 3 + [(8, 0.2)] * 2, True),  # slow, then quick again
    ],
)
def test_runs_served_move_a_model_on_or_off_the_loop_only_when_they_agree(
    tiny: LoadedModel, fast: bool, runs: list[tuple[int, float]], after: bool
) -> None:
    assert (FAST_RUNS, FAST_RUN_MS, SLOW_RUNS, SLOW_RUN_MS) == (2, 0.5, 3, 2.0)  # the table's
    adapter = ModelAdapter(tiny, {1: 0.01, 8: 0.02} if fast else {1: 0.01}, 8)
    assert adapter.fast is fast
    for size, ms in runs:
        adapter._judge(size, ms)
    assert adapter.fast is after


def test_a_model_on_a_gpu_is_never_made_fast_by_the_runs_it_serves(tiny: LoadedModel) -> None:
    """A batch size not seen yet may build kernels or engines there: never on the loop."""
    on_gpu = tiny.info.model_copy(update={"providers": ["CUDAExecutionProvider"]})
    adapter = ModelAdapter(_Renamed(tiny, on_gpu), {1: 0.01}, 8)  # type: ignore[arg-type]
    for _ in range(5):
        adapter._judge(8, 0.1)
    assert not adapter.fast


class _Renamed:
    """A loaded model that reports other `info` (a unit stand-in for its providers)."""

    def __init__(self, inner: LoadedModel, info: ModelInfo) -> None:
        self.info, self.task, self.inner = info, inner.task, inner

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        return self.inner.run_batch(samples)


class _SlowRuns:
    """A loaded model whose runs take `seconds` (a unit stand-in for a model whose inputs
    grew)."""

    def __init__(self, inner: LoadedModel, seconds: float) -> None:
        self.info, self.task, self.inner, self.seconds = inner.info, inner.task, inner, seconds

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        time.sleep(self.seconds)
        return self.inner.run_batch(samples)


def test_a_fast_model_whose_runs_turn_slow_goes_back_off_the_event_loop(
    tiny: LoadedModel,
) -> None:
    slow = _SlowRuns(tiny, 2 * SLOW_RUN_MS / 1000)
    adapter = ModelAdapter(slow, {1: 0.01, 8: 0.02}, 8)  # type: ignore[arg-type]
    assert adapter.fast
    for _ in range(SLOW_RUNS):
        adapter.run_batch([np.zeros((1, 8, 8), dtype=np.float32)])
    assert not adapter.fast
