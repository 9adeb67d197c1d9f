"""The replica-demand formula, with hand-computed cases."""

from __future__ import annotations

import pytest

from scaler.policy import Observation, Policy, Reason, Window, decide, prewarm_demand

POLICY = Policy(target_drain_s=10, default_throughput=2, default_cold_start_s=5)


def test_idle_is_zero_and_inactive() -> None:
    d = decide(Observation(), POLICY)
    assert (d.demand, d.replicas, d.active, d.reason) == (0.0, 0, False, Reason.IDLE)


def test_backlog_over_both_priorities_drains_within_target() -> None:
    # (30 pending + 10 ack-pending) / (2 jobs/s * 10 s) = 2 replicas
    d = decide(Observation(pending=30, ack_pending=10), POLICY)
    assert d.demand == pytest.approx(2.0)
    assert (d.replicas, d.active, d.reason, d.backlog) == (2, True, Reason.BACKLOG, 40)


def test_a_fraction_of_a_replica_rounds_up() -> None:
    # 41 jobs: 2.05 -> the HPA's ceil gives 3
    d = decide(Observation(pending=41), POLICY)
    assert d.demand == pytest.approx(2.05)
    assert d.replicas == 3


def test_one_job_wakes_one_replica() -> None:
    # 1 / (2 * 10) = 0.05, floored to 1 while active
    d = decide(Observation(pending=1), POLICY)
    assert (d.demand, d.replicas) == (1.0, 1)


def test_arrivals_need_steady_replicas_plus_what_arrives_during_a_cold_start() -> None:
    # lambda/mu = 4/2 = 2; (0 + 4 * 5) / (2 * 10) = 1 -> 3 replicas
    d = decide(Observation(arrival_rate=4.0), POLICY)
    assert d.demand == pytest.approx(3.0)
    assert (d.replicas, d.active, d.reason) == (3, True, Reason.ARRIVALS)


def test_measured_throughput_and_cold_start_replace_the_defaults() -> None:
    # mu 0.5, L 30: 1/0.5 + (20 + 1 * 30) / (0.5 * 10) = 2 + 10 = 12
    obs = Observation(pending=20, arrival_rate=1.0, throughput=0.5, cold_start_s=30.0)
    d = decide(obs, POLICY)
    assert d.demand == pytest.approx(12.0)
    assert (d.throughput, d.lead_s) == (0.5, 30.0)


def test_max_replicas_caps_the_demand() -> None:
    obs = Observation(pending=20, arrival_rate=1.0, throughput=0.5, cold_start_s=30.0)
    d = decide(obs, Policy(target_drain_s=10, max_replicas=4))
    assert (d.demand, d.replicas) == (4.0, 4)


def test_a_trickle_below_the_activation_rate_is_not_activity() -> None:
    d = decide(Observation(arrival_rate=0.05), POLICY)
    assert (d.active, d.demand, d.replicas) == (False, 0.0, 0)


def test_retrying_jobs_hold_one_replica_then_let_go() -> None:
    held = decide(Observation(ack_pending=3, retrying=3, retrying_for_s=5.0), POLICY)
    assert (held.demand, held.replicas, held.reason, held.backlog) == (
        1.0,
        1,
        Reason.RETRYING,
        0,
    )
    gone = decide(Observation(ack_pending=3, retrying=3, retrying_for_s=121.0), POLICY)
    assert (gone.demand, gone.replicas, gone.active) == (0.0, 0, False)
    # its redeliveries move the arrival counter, but they are not new work
    looping = Observation(ack_pending=1, retrying=1, retrying_for_s=121.0, arrival_rate=0.5)
    assert not decide(looping, POLICY).active


def test_retrying_jobs_add_no_capacity_demand_on_top_of_a_backlog() -> None:
    # 40 fresh + 5 retrying in ack-pending: only the 40 drive the demand
    d = decide(Observation(pending=40, ack_pending=5, retrying=5), POLICY)
    assert d.demand == pytest.approx(2.0)


def test_a_stale_redelivered_count_is_ignored() -> None:
    # JetStream keeps num_redelivered for a message it gave up on; nothing is ack-pending
    d = decide(Observation(ack_pending=0, retrying=1), POLICY)
    assert not d.active


def test_prewarm_starts_one_lead_time_before_the_window() -> None:
    window = Window(start=1000.0, end=1600.0, rate=10.0)
    policy = Policy(default_throughput=2, default_cold_start_s=20, prewarm_margin_s=5)
    # lead = 20 + 5 = 25 s; 10 jobs/s at 2 jobs/s per replica = 5 replicas
    assert decide(Observation(), policy, (window,), now=974.0).demand == 0.0
    early = decide(Observation(), policy, (window,), now=976.0)
    assert (early.demand, early.replicas, early.reason) == (5.0, 5, Reason.PREWARM)
    assert decide(Observation(), policy, (window,), now=1599.0).replicas == 5
    assert not decide(Observation(), policy, (window,), now=1600.0).active


def test_prewarm_replicas_and_measured_cold_start() -> None:
    window = Window(start=100.0, end=200.0, rate=2.0, replicas=3)
    # replicas 3 beat 2 jobs/s / 2 = 1; measured cold start 60 s + margin 5 s
    assert prewarm_demand((window,), now=36.0, lead_s=65.0, mu=2.0) == 3.0
    assert prewarm_demand((window,), now=34.0, lead_s=65.0, mu=2.0) == 0.0
    d = decide(Observation(cold_start_s=60.0), POLICY, (window,), now=36.0)
    assert d.replicas == 3


def test_prewarm_and_backlog_take_the_larger() -> None:
    window = Window(start=0.0, end=100.0, replicas=2)
    d = decide(Observation(pending=100), POLICY, (window,), now=50.0)
    assert d.demand == pytest.approx(5.0)  # 100 / 20 beats the plan's 2
    assert d.reason is Reason.BACKLOG


def test_warming_replicas_serve_part_of_the_expected_backlog() -> None:
    # B + λL = 40 + 4 * 5 = 60; one replica warming for 3 s serves 2 * 3 = 6 of it before
    # a replica asked for now could: 2 + (60 - 6) / (2 * 10) = 4.7
    d = decide(Observation(pending=40, arrival_rate=4.0, warming_s=(3.0,)), POLICY)
    assert d.demand == pytest.approx(4.7)
    # one warming for longer than the lead serves the whole lead: 2 + (60 - 10) / 20 = 4.5
    late = decide(Observation(pending=40, arrival_rate=4.0, warming_s=(9.0,)), POLICY)
    assert late.demand == pytest.approx(4.5)
    # the credit never goes below what keeps up with arrivals, and does not make activity
    many = decide(Observation(arrival_rate=4.0, warming_s=(5.0, 5.0, 5.0)), POLICY)
    assert many.demand == pytest.approx(2.0)
    assert many.reason is Reason.ARRIVALS
    assert not decide(Observation(warming_s=(1.0,)), POLICY).active


def test_a_look_during_a_cold_start_does_not_ask_again_for_what_arrived_meanwhile() -> None:
    policy = Policy(target_drain_s=30, default_throughput=10, default_cold_start_s=30)
    # t=0: 100 jobs waiting, 20 jobs/s: 2 + (100 + 600) / 300 = 4.33 -> 5 replicas asked for
    first = decide(Observation(pending=100, arrival_rate=20.0), policy)
    assert first.replicas == 5
    # t=15: 300 more have arrived, the five replicas have warmed for 15 s; without the credit
    # the demand would be 2 + (400 + 600) / 300 = 5.33 -> 6, for the same traffic
    later = Observation(pending=400, arrival_rate=20.0, warming_s=(15.0,) * 5)
    assert decide(later, policy).replicas <= first.replicas
