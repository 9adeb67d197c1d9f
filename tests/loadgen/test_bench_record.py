"""The bench record: targets, verdicts, and the simulator reading it back."""

from __future__ import annotations

import cProfile
import json
import pstats
from pathlib import Path

import pytest

from loadgen.bench.hotspots import to_profile
from loadgen.bench.record import (
    BenchRecord,
    ColdStart,
    Compute,
    Latency,
    Memory,
    MessagePath,
    Percentiles,
)
from loadgen.bench.suite import TARGETS, figures_of
from loadgen.sim import ServiceModel


def _record() -> BenchRecord:
    return BenchRecord(
        batch=4,
        threads=1,
        cpu_count=2,
        compute=Compute(raw_img_s=10.0, worker_img_s=9.6, ratio=0.96),
        message_path=MessagePath(jobs=100, bare_jobs_s=1000.0, worker_jobs_s=500.0, ratio=0.5),
        latency_ms=Latency(
            surge=Percentiles(p50=1.2, p99=3.0), bare=Percentiles(p50=1.0, p99=2.0), p50_ratio=1.2
        ),
        memory=Memory(worker_rss=3, bare_rss=2, ratio=1.5),
        cold_start_s=ColdStart(worker=1.3, worker_seen_by_bench=1.4, bare=1.0, ratio=1.3),
    )


def test_figures_carry_targets_and_verdicts() -> None:
    figures = {f.name: f for f in figures_of(_record())}
    assert set(figures) == set(TARGETS)
    assert figures["compute"].meets and figures["latency p50"].meets
    assert figures["memory"].meets  # the target is inclusive
    assert not figures["message path"].meets and not figures["cold start"].meets
    assert figures["message path"].target == ">= 0.7"


def test_the_table_names_the_floor_beside_the_bare_loop_when_it_was_measured() -> None:
    from rich.console import Console

    from loadgen.bench.suite import table

    def rendered(record: BenchRecord) -> str:
        record.figures = figures_of(record)
        console = Console(width=200, record=True)
        console.print(table(record))
        return console.export_text()

    record = _record()
    assert "floor" not in rendered(record)  # a record from before the floors were measured
    record.message_path.floor_jobs_s, record.message_path.floor_ratio = 625.0, 0.8
    record.message_path.floor_cpu_us_per_job = 380.0
    record.latency_ms.floor, record.latency_ms.floor_p50_ratio = Percentiles(p50=1, p99=2), 1.2
    text = rendered(record)
    assert "1000 bare loop; 625 floor, 380 us CPU/job, Surge 0.80x" in text
    assert "1.00 floor, Surge 1.20x" in text


def test_the_wake_penalty_times_a_tiny_job_step_back_to_back_and_after_idle() -> None:
    from loadgen.bench.wake import wake_penalty

    wake = wake_penalty(gap_s=0.002, runs=15)
    assert wake.gap_ms == 2.0 and wake.back_to_back_us > 0 and wake.after_idle_us > 0
    assert wake.ratio == pytest.approx(wake.after_idle_us / wake.back_to_back_us)


def test_the_table_says_the_wake_penalty_under_it_when_measured() -> None:
    from rich.console import Console

    from loadgen.bench.record import WakePenalty
    from loadgen.bench.suite import table

    record = _record()
    record.figures = figures_of(record)
    record.latency_ms.wake = WakePenalty(
        gap_ms=5, back_to_back_us=100, after_idle_us=450, ratio=4.5
    )
    console = Console(width=200, record=True)
    console.print(table(record))
    assert "450 us after 5 ms idle, 100 us back to back (4.5x)" in console.export_text()


def test_simulator_reads_per_replica_throughput_from_a_record() -> None:
    data = json.loads(_record().model_dump_json())
    service = ServiceModel.from_bench(data)
    assert service.max_batch == 4
    assert service.max_throughput == 9.6


def test_a_profile_names_the_functions_that_take_the_time() -> None:
    def busy() -> int:
        return sum(i * i for i in range(200_000))

    profiler = cProfile.Profile()
    profiler.enable()
    busy()
    profiler.disable()
    stats = pstats.Stats(profiler)
    profile = to_profile(stats, figure="x", what="test", wall_s=0.1)
    assert any("busy" in row.function or "genexpr" in row.function for row in profile.top_own_time)
    assert profile.top_cumulative[0].cumtime_s >= profile.top_own_time[-1].tottime_s
    assert "busy time by package" in profile.summary
    assert any(name.startswith("tests/loadgen/") for name in profile.own_time_by_package)


def test_the_message_path_figure_is_the_round_with_the_median_ratio(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loadgen.bench import suite
    from loadgen.bench.baselines import LoopRate

    surge_rates = iter([300.0, 100.0, 200.0])  # ratios 0.3, 0.1, 0.2 against 1000
    stopped: list[int] = []

    class FakeWorker:
        def __init__(self, number: int) -> None:
            self.number = number

        def stop(self) -> None:
            stopped.append(self.number)

    async def bare(*args: object) -> LoopRate:
        return LoopRate(1000.0, 150.0)

    async def floor(*args: object) -> LoopRate:
        return LoopRate(400.0, 375.0)

    async def surge(*args: object) -> tuple[LoopRate, FakeWorker]:
        rate = next(surge_rates)
        return LoopRate(rate, 1e5 / rate), FakeWorker(int(rate))

    monkeypatch.setattr(suite, "bare_pull_loop", bare)
    monkeypatch.setattr(suite, "bare_floor_loop", floor)
    monkeypatch.setattr(suite, "surge_message_path", surge)
    figure, last = suite._message_path("nats://x", tmp_path, {}, 10, rounds=3)
    assert [r.ratio for r in figure.rounds] == pytest.approx([0.3, 0.1, 0.2])
    assert figure.ratio == pytest.approx(0.2) and figure.worker_jobs_s == 200.0
    assert figure.cpu_ratio == pytest.approx(150.0 / 500.0)
    assert figure.floor_jobs_s == 400.0 and figure.floor_ratio == pytest.approx(0.5)
    assert all(r.floor_cpu_us_per_job == 375.0 for r in figure.rounds)
    assert stopped == [300, 100] and last.number == 200  # the last still runs, for latency


def test_the_bare_session_figures_are_read_from_their_own_line() -> None:
    from loadgen.bench.baselines import bare_figures

    noisy = "\x1b[m\nCUDA: something the libraries print\nbare-session 0.81 524288000\n\x1b[m\n"
    assert bare_figures(noisy) == (0.81, 524288000)  # a GPU session's libraries print too
    assert bare_figures("\x1b[mbare-session 0.5 1024\n") == (0.5, 1024)  # no newline before
    with pytest.raises(RuntimeError, match="printed no figures"):
        bare_figures("1.2 345\n")  # no line of its own: nothing is guessed
