"""Profiles: shapes, scaling, CSV traces and the Poisson arrival process."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.run.profiles import (
    BUILTIN_PROFILES,
    build_profile,
    load_csv_profile,
    poisson_arrivals,
    profile_from_options,
)


def test_marketing_spike_shape_scales_with_rate_and_duration() -> None:
    laptop = build_profile("marketing-spike", rate=2, duration=60, factor=30)
    cluster = build_profile("marketing-spike", rate=20, duration=7200, factor=30)
    for profile, rate, duration in ((laptop, 2, 60), (cluster, 20, 7200)):
        assert profile.rate_at(0.1 * duration) == pytest.approx(rate)
        assert profile.peak_rate == pytest.approx(30 * rate)
        assert profile.rate_at(0.4 * duration) == pytest.approx(30 * rate)
        assert profile.rate_at(0.95 * duration) == 0.0
        assert profile.duration == duration
        rise_start, _ = profile.points[1], profile.points[2]
        rise = profile.points[2][0] - rise_start[0]
        assert 1.0 <= rise <= 300.0  # seconds to minutes
    # the same shape: rates at the same fraction of the run differ only by the rate scale
    for fraction in (0.1, 0.21, 0.3, 0.6, 0.8):
        assert cluster.rate_at(fraction * 7200) == pytest.approx(
            10 * laptop.rate_at(fraction * 60), rel=0.05, abs=1e-6
        )


def test_builtins_and_expected_jobs() -> None:
    assert set(BUILTIN_PROFILES) == {"constant", "step", "ramp", "marketing-spike"}
    assert build_profile("constant", rate=5, duration=10).expected_jobs() == pytest.approx(50)
    step = build_profile("step", rate=2, duration=10, factor=4)
    assert step.rate_at(4.9) == 2 and step.rate_at(5.1) == 8
    assert step.expected_jobs() == pytest.approx(2 * 5 + 8 * 5)
    ramp = build_profile("ramp", rate=1, duration=10, factor=3)
    assert ramp.expected_jobs() == pytest.approx((1 + 3) / 2 * 10)
    assert ramp.expected_jobs(until=5) == pytest.approx((1 + 2) / 2 * 5)
    with pytest.raises(ValueError, match="unknown profile"):
        build_profile("sawtooth", rate=1, duration=10)


def test_csv_trace_is_replayed_stretched_and_scaled(tmp_path: Path) -> None:
    trace = tmp_path / "traffic.csv"
    trace.write_text("time,rate\n100,1\n110,10\n130,0\n")
    profile = load_csv_profile(trace)
    assert profile.points == [(0.0, 1.0), (10.0, 10.0), (30.0, 0.0)]
    scaled = profile_from_options(str(trace), 0.0, None, 60.0, 2.0)
    assert scaled.duration == 60
    assert scaled.rate_at(20) == pytest.approx(20.0)
    kept = profile_from_options(f"csv:{trace}", 0.0, None, None, 1.0)
    assert kept.duration == 30
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1\n5,-2\n")
    with pytest.raises(ValueError, match="rates must be >= 0"):
        load_csv_profile(bad)


def test_poisson_arrivals_follow_the_rate_and_the_seed() -> None:
    profile = build_profile("step", rate=50, duration=20, factor=4)  # 50/s then 200/s
    arrivals = list(poisson_arrivals(profile, seed=7))
    assert arrivals == sorted(arrivals)
    assert arrivals == list(poisson_arrivals(profile, seed=7))
    assert arrivals != list(poisson_arrivals(profile, seed=8))
    first = sum(t < 10 for t in arrivals)
    second = len(arrivals) - first
    # 500 and 2000 expected: within 5 standard deviations
    assert abs(first - 500) < 5 * 500**0.5
    assert abs(second - 2000) < 5 * 2000**0.5
