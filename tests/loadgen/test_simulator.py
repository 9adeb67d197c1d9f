"""The policy simulator against the shipped ScaledObject and cases worked out by hand.

The step case: no jobs until t=12, then 20 jobs/s (fluid, deterministic) until t=102.
A replica serves 10 jobs/s (batch 1, 0.1 s per job) and takes 30 s from request to
ready: 20 s for the node, then 10 s from process start (what its heartbeats report).
KEDA polls and the HPA syncs at t = 0, 5, 10... (30 s for keda-default) and 0, 15, 30...
(phases pinned to 0). Settings are the shipped ScaledObject's: maxReplicaCount 4,
lagThreshold 8, pollingInterval 5 s, scale-down 1 pod per 60 s after a 300 s window.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from loadgen.run.profiles import Profile, build_profile
from loadgen.sim import (
    SCALEDOBJECT,
    ColdStart,
    PolicyResult,
    ServiceModel,
    SimReport,
    default_policies,
    run_simulation,
)
from loadgen.sim.cli import POLICY_NAMES, simulate
from loadgen.sim.engine import Fleet, make_trace
from loadgen.sim.manifest import SHARED, TUNING
from loadgen.sim.policies import KedaHpa
from scaler.policy import Observation, decide

STEP = Profile(name="step", points=[(0, 0), (12, 0), (12, 20), (102, 20)])
SERVICE = ServiceModel(max_batch=1, batch_overhead_s=0.0, per_job_s=0.1)
COLD = ColdStart(node_s=20, image_s=0, model_s=10, warmup_s=0)


@pytest.fixture(scope="module")
def step() -> SimReport:
    return run_simulation(
        STEP, service=SERVICE, cold_start=COLD, poisson=False, phases=(0.0, 0.0), tail_s=600
    )


def _result(report: SimReport, policy: str) -> PolicyResult:
    return next(r for r in report.results if r.policy == policy)


def _changes(result: PolicyResult) -> list[tuple[int, int]]:
    """(second, replicas) at every change of the replica count."""
    out, last = [], None
    for point in result.timeline:
        if point.replicas != last:
            out.append((point.t, point.replicas))
            last = point.replicas
    return out


def test_policy_names_match_the_cli() -> None:
    from loadgen.sim import POLICIES

    assert POLICY_NAMES == POLICIES


def test_presets_take_the_shipped_scaledobject_and_differ_only_where_compared() -> None:
    spec = json.loads(SCALEDOBJECT.read_text())["spec"]
    presets = default_policies()
    surge = presets["surge"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    lag = next(t for t in spec["triggers"] if t["type"] == "nats-jetstream")["metadata"]
    assert surge.polling_interval_s == spec["pollingInterval"]
    assert surge.cooldown_s == spec["cooldownPeriod"]
    assert (surge.min_replicas, surge.max_replicas) == (
        spec["minReplicaCount"],
        spec["maxReplicaCount"],
    )
    assert surge.lag_threshold == float(lag["lagThreshold"])
    assert surge.scale_down.window_s == behavior["scaleDown"]["stabilizationWindowSeconds"]
    assert [(p.kind, p.value, p.period_s) for p in surge.scale_down.policies] == [
        (p["type"], p["value"], p["periodSeconds"]) for p in behavior["scaleDown"]["policies"]
    ]
    assert surge.push is not None and surge.push.function == "remove-bg"
    # keda-default is KEDA's and the HPA's own tuning
    default = presets["keda-default"]
    assert (default.polling_interval_s, default.lag_threshold) == (30.0, 10.0)
    assert [p.kind for p in default.scale_down.policies] == ["Percent"]

    def differing(a: str, b: str) -> set[str]:
        one, two = presets[a].model_dump(), presets[b].model_dump()
        return {key for key in one if one[key] != two[key]}

    assert differing("keda-default", "keda-tuned") <= set(TUNING)
    assert differing("keda-tuned", "surge") == {"push"}
    assert differing("surge", "surge-prewarm") == {"prewarm"}
    for name in SHARED:
        assert len({repr(getattr(p, name)) for p in presets.values()}) == 1, name


def test_shared_knobs_move_every_policy() -> None:
    presets = default_policies(shared={"cooldown_s": 60.0, "max_replicas": 8})
    assert {(p.cooldown_s, p.max_replicas) for p in presets.values()} == {(60.0, 8)}
    tuned = default_policies(tuned={"polling_interval_s": 1.0}, drain_target_s=30.0)
    assert [p.polling_interval_s for p in tuned.values()] == [30.0, 1.0, 1.0, 1.0]
    assert tuned["surge"].push is not None and tuned["surge"].push.target_drain_s == 30.0
    with pytest.raises(ValueError, match="cooldown_s"):
        default_policies(shared={"cooldown_s": -1.0})


def test_polling_and_push_set_when_the_first_replica_is_ready(step: SimReport) -> None:
    # keda-default: the first poll that sees a backlog is t=30; ready at 60
    assert _result(step, "keda-default").first_ready_s == pytest.approx(30 + 30)
    # keda-tuned: polls every 5 s, so t=15; surge: pushed 0.5 s after the first job
    assert _result(step, "keda-tuned").first_ready_s == pytest.approx(15 + 30)
    assert _result(step, "surge").first_ready_s == pytest.approx(12 + 0.5 + 30)
    # surge-prewarm: the plan (20 jobs/s from t=12) starts L + margin = 10 + 5 s early,
    # i.e. at once: 2 replicas at the t=0 poll and sync, ready at 30
    assert _result(step, "surge-prewarm").first_ready_s == pytest.approx(30)


def test_hpa_behaviour_matches_the_hand_computation(step: SimReport) -> None:
    # keda-default: at t=30 one replica, then the sync: ceil(362 / 10) = 37, limited to
    # max(1 + 4 pods, 1 + 100 %) = 5, capped at maxReplicaCount 4. Last active poll t=90
    # (backlog 362), so zero at 390; the 300 s window holds 4 until then.
    default = _result(step, "keda-default")
    assert _changes(default) == [(0, 0), (30, 4), (390, 0)]
    assert default.gpu_seconds == pytest.approx(4 * (390 - 30))
    at = {p.t: p for p in default.timeline}
    assert at[60].backlog == pytest.approx(20 * 48 + 2, abs=3)  # none served until 60
    # keda-tuned: 4 at t=15 (lag 62 / 8); the last recommendation of 4 is at t=75, so at
    # t=375 the window lets it go down, by one pod per 60 s; zero at 100 + 300
    tuned = _result(step, "keda-tuned")
    assert _changes(tuned) == [(0, 0), (15, 4), (375, 3), (400, 0)]
    assert tuned.gpu_seconds == pytest.approx(4 * 360 + 3 * 25)
    # surge: the push brings one replica at 12.5, the sync at 15 four; its demand kept
    # asking for 4 while jobs arrived (2 + (B + 20 * 10) / 100 >= 4 until t=102)
    assert _changes(_result(step, "surge")) == [(0, 0), (13, 1), (15, 4), (390, 3), (400, 0)]
    for policy in ("keda-default", "keda-tuned", "surge", "surge-prewarm"):
        assert _result(step, policy).unserved == pytest.approx(0, abs=1e-6)
        assert _result(step, policy).served == pytest.approx(20 * 90)


def test_fixed_fleet_and_oracle_never_queue(step: SimReport) -> None:
    fixed = _result(step, "fixed")
    assert fixed.peak_replicas == 2  # ceil(20 jobs/s / 10 per replica)
    assert fixed.gpu_seconds == pytest.approx(2 * 702)  # always on for the horizon
    assert fixed.latency_max_s == pytest.approx(0.1)
    oracle = _result(step, "oracle")
    assert oracle.latency_max_s == pytest.approx(0.1)
    # two replicas requested at t=-18 (ready at 12), removed when the last job is done
    assert oracle.gpu_seconds == pytest.approx(2 * (18 + 102), abs=1)
    assert all(r.gpu_seconds >= oracle.gpu_seconds for r in step.results)


def test_surge_decides_with_scaler_policy_on_the_simulated_state() -> None:
    presets = default_policies()
    trace = make_trace(STEP, 200, 0.1, 1, poisson=False)
    surge = KedaHpa(presets["surge"], trace, SERVICE, COLD, seed=1, lead_s=10, phases=(0, 0))
    for tick in range(151):  # the watcher fed the arrival counter every 0.1 s up to t=15
        surge.arrivals.add(tick / 10, int(trace.cumulative[tick + 1] + 1e-6))
    fleet = Fleet(cold_start=30)
    fleet.scale_to(1, t=12.5)  # ready at 42.5: its process starts at 32.5, unseen at 15
    obs = surge.observation(15.0, 62.0, fleet)
    # rate = min(2 - 0, 62 - 2) / 3 s (the two half windows of 6 s); mu, L as measured
    assert obs.arrival_rate == pytest.approx(2 / 3)
    rate = obs.arrival_rate
    assert obs == Observation(pending=62, arrival_rate=rate, throughput=10.0, cold_start_s=10.0)
    assert surge.policy is not None
    assert decide(obs, surge.policy).replicas == 1  # 2/30 + (62 + 20/3) / 100 = 0.75
    # replicas whose process is up are warming, with their age since process start
    fleet.scale_to(4, t=15.0)  # three more, ready at 45: processes up from 35
    assert surge.observation(38.0, 0.0, fleet).warming_s == pytest.approx((5.5, 3.0, 3.0, 3.0))


def test_the_command_reads_the_scaledobject_and_applies_cooldown_to_all(tmp_path: Path) -> None:
    site = json.loads(SCALEDOBJECT.read_text())
    site["spec"]["maxReplicaCount"] = 2
    (tmp_path / "so.json").write_text(json.dumps(site))
    app = typer.Typer()
    app.command()(simulate)
    args = ["--profile", "step", "--rate", "5", "--duration", "120"]
    args += ["--tail", "120", "--cooldown", "60", "--scaledobject", str(tmp_path / "so.json")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = SimReport.model_validate_json((tmp_path / "simulation.json").read_text())
    assert {(p.cooldown_s, p.max_replicas) for p in report.policies.values()} == {(60.0, 2)}
    assert "cooldownPeriod 60s" in result.output and "so.json" in result.output
    del site["spec"]["triggers"][2]  # no external-push trigger
    (tmp_path / "so.json").write_text(json.dumps(site))
    assert CliRunner().invoke(app, args).exit_code == 2


def test_cluster_scale_run_is_fast_deterministic_and_prints_assumptions() -> None:
    spike = build_profile("marketing-spike", rate=10, duration=7200, factor=50)
    started = time.perf_counter()
    first = run_simulation(spike, seed=3)
    assert time.perf_counter() - started < 30
    again = run_simulation(spike, seed=3, policies=["surge"])
    same = {"description"}  # what it names depends on the policies compared
    one, two = _result(again, "surge"), _result(first, "surge")
    assert one.model_dump(exclude=same) == two.model_dump(exclude=same)
    other = run_simulation(spike, seed=4, policies=["surge"])
    assert _result(other, "surge").served != _result(first, "surge").served
    assert [r.policy for r in first.results] == list(POLICY_NAMES)
    text = "\n".join(first.assumptions())
    for needle in (
        "cold start 93 s",
        "jobs/s at full batch",
        "L 8 s",
        "keda-default: triggers nats-jetstream, pollingInterval 30s",
        "keda-tuned: triggers nats-jetstream, pollingInterval 5s",
        "shared: activationLagThreshold 0, cooldownPeriod 300s, replicas 0..4",
        "oracle",
    ):
        assert needle in text
    oracle = _result(first, "oracle")
    default, tuned = _result(first, "keda-default"), _result(first, "keda-tuned")
    # tuning shows: lagThreshold 8 reacts no later, one pod per 60 s down keeps GPUs longer
    assert tuned.latency_p99_s <= default.latency_p99_s
    assert tuned.gpu_seconds > default.gpu_seconds
    assert _result(first, "surge-prewarm").latency_p99_s < tuned.latency_p99_s
    assert oracle.gpu_seconds <= min(r.gpu_seconds for r in first.results)
