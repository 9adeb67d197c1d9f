"""The policy simulator against cases worked out by hand.

The step case: no jobs until t=10, then 20 jobs/s (fluid, deterministic) until t=100.
A replica serves 10 jobs/s (batch 1, 0.1 s per job) and takes 30 s from request to ready.
KEDA polls and the HPA syncs at t = 0, 30, 60... and 0, 15, 30... (phases pinned to 0).
"""

from __future__ import annotations

import time

import pytest

from loadgen.profiles import Profile, build_profile
from loadgen.sim import ColdStart, ServiceModel, SimReport, run_simulation, surge_demand
from loadgen.sim.engine import Fleet
from loadgen.simcli import POLICY_NAMES

STEP = Profile(name="step", points=[(0, 0), (10, 0), (10, 20), (100, 20)])
SERVICE = ServiceModel(max_batch=1, batch_overhead_s=0.0, per_job_s=0.1)
COLD = ColdStart(node_s=30, image_s=0, model_s=0, warmup_s=0)


@pytest.fixture(scope="module")
def step() -> SimReport:
    return run_simulation(
        STEP, service=SERVICE, cold_start=COLD, poisson=False, phases=(0.0, 0.0), tail_s=200
    )


def _result(report: SimReport, policy: str):  # type: ignore[no-untyped-def]
    return next(r for r in report.results if r.policy == policy)


def test_policy_names_match_the_cli() -> None:
    from loadgen.sim import POLICIES

    assert POLICY_NAMES == POLICIES


def test_keda_defaults_wait_for_the_poll_then_a_full_cold_start(step: SimReport) -> None:
    keda = _result(step, "keda-default")
    # the first poll that sees a backlog is t=30; the replica it asks for is ready at 60
    assert keda.first_ready_s == pytest.approx(30 + 30)
    at = {p.t: p for p in keda.timeline}
    assert at[60].backlog == pytest.approx(20 * 50, abs=3)  # 50 s of arrivals, none served
    assert keda.served == pytest.approx(20 * 90)


def test_surge_push_and_demand_match_the_hand_computation(step: SimReport) -> None:
    surge = _result(step, "surge")
    # push: active 0.5 s after the first job, ready one cold start later
    assert surge.first_ready_s == pytest.approx(10 + 0.5 + 30)
    # first HPA sync (t=15): rate 20/s, backlog 100, one replica starting (ready at 40.5):
    # demand = ceil(20/10 + (100 + 20*30 - 10*(45-40.5)) / (10*30)) = ceil(4.18) = 5
    assert surge.peak_replicas == 5
    at = {p.t: p for p in surge.timeline}
    assert at[40].backlog == pytest.approx(20 * 30, abs=3)
    # served: 10/s from 40.5, 50/s from 45; the job that arrived at 12.25 (the 45th)
    # waits longest: it starts at 45, so max latency = 45 - 12.25 + 0.1 = 32.85 s
    assert surge.latency_max_s == pytest.approx(32.85, abs=0.15)
    assert surge.unserved == pytest.approx(0, abs=1e-6)
    assert surge.timeline[-1].replicas == 0  # scaled back to zero after the cooldown


def test_fixed_fleet_and_oracle_never_queue(step: SimReport) -> None:
    fixed = _result(step, "fixed")
    assert fixed.peak_replicas == 2  # ceil(20 jobs/s / 10 per replica)
    assert fixed.gpu_seconds == pytest.approx(2 * 300)  # always on for the 300 s horizon
    assert fixed.latency_max_s == pytest.approx(0.1)
    oracle = _result(step, "oracle")
    assert oracle.latency_max_s == pytest.approx(0.1)
    # two replicas requested at t=-20 (ready at 10), removed when the last job is done
    assert oracle.gpu_seconds == pytest.approx(2 * (20 + 100), abs=1)
    assert all(r.gpu_seconds >= oracle.gpu_seconds for r in step.results)


def test_surge_demand_counts_replicas_already_starting() -> None:
    fleet = Fleet(cold_start=30)
    fleet.scale_to(1, t=10.5)
    assert surge_demand(20, 100, fleet, 15.0, SERVICE, drain_target_s=30) == 5
    assert surge_demand(0, 0, Fleet(cold_start=30), 0.0, SERVICE, drain_target_s=30) == 0


def test_cluster_scale_run_is_fast_deterministic_and_prints_assumptions() -> None:
    spike = build_profile("marketing-spike", rate=20, duration=7200, factor=50)
    started = time.perf_counter()
    first = run_simulation(spike, seed=3)
    assert time.perf_counter() - started < 30
    again = run_simulation(spike, seed=3, policies=["surge"])
    assert _result(again, "surge") == _result(first, "surge")
    other = run_simulation(spike, seed=4, policies=["surge"])
    assert _result(other, "surge").served != _result(first, "surge").served
    assert [r.policy for r in first.results] == list(POLICY_NAMES)
    text = "\n".join(first.assumptions())
    for needle in ("cold start 93 s", "jobs/s at full batch", "keda-default: poll 30s", "oracle"):
        assert needle in text
    oracle = _result(first, "oracle")
    prewarm = _result(first, "surge-prewarm")
    keda = _result(first, "keda-default")
    assert prewarm.latency_p99_s < keda.latency_p99_s
    assert oracle.gpu_seconds <= min(r.gpu_seconds for r in first.results)
