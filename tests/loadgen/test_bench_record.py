"""The bench record: targets, verdicts, and the simulator reading it back."""

from __future__ import annotations

import cProfile
import json
import pstats

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
