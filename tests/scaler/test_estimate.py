"""Arrival rate and heartbeat statistics, fed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from function.contract.heartbeat import Heartbeat, WorkerState
from scaler.estimate import ArrivalRate, ReplicaStats
from scaler.watcher import FunctionWatcher


def test_steady_arrivals_give_their_rate() -> None:
    rate = ArrivalRate(window_s=6.0)
    for tick in range(21):
        rate.add(tick * 0.5, int(tick * 0.5 * 5))  # 5 jobs/s
    assert rate.rate(10.0) == pytest.approx(5.0)


def test_a_one_shot_burst_is_backlog_not_a_rate() -> None:
    rate = ArrivalRate(window_s=6.0)
    for second in range(11):
        rate.add(float(second), 0 if second < 4 else 100)
    assert rate.rate(10.0) == 0.0
    assert rate.rate(6.0) == 0.0  # burst in the second half, nothing in the first


def test_no_rate_until_the_window_is_covered() -> None:
    rate = ArrivalRate(window_s=6.0)
    rate.add(0.0, 0)
    rate.add(1.0, 50)
    assert rate.rate(1.0) == 0.0


def test_a_reset_counter_restarts_the_window() -> None:
    rate = ArrivalRate(window_s=2.0)
    for second in range(5):
        rate.add(float(second), 100 + second * 10)
    rate.add(5.0, 3)  # consumer recreated
    assert rate.rate(5.0) == 0.0


def beat(worker: str, state: WorkerState, **fields: float) -> Heartbeat:
    return Heartbeat(
        worker_id=worker,
        function="tiny",
        state=state,
        started_at=datetime.now(UTC),
        **fields,  # type: ignore[arg-type]
    )


def test_throughput_is_sampled_only_while_a_backlog_waits() -> None:
    stats = ReplicaStats(alpha=0.5)
    stats.observe(beat("a", WorkerState.READY, jobs_per_s=1.0), 0.0, saturated=False)
    assert stats.throughput is None
    stats.observe(beat("a", WorkerState.READY, jobs_per_s=8.0), 1.0, saturated=True)
    stats.observe(beat("a", WorkerState.READY, jobs_per_s=4.0), 2.0, saturated=True)
    assert stats.throughput == pytest.approx(6.0)  # 8 + 0.5 * (4 - 8)
    stats.observe(beat("a", WorkerState.READY, jobs_per_s=0.0), 3.0, saturated=True)
    assert stats.throughput == pytest.approx(6.0)


def test_cold_start_is_the_slowest_recent_one() -> None:
    stats = ReplicaStats(keep=2)
    for index, cold in enumerate((9.0, 2.0, 3.0)):
        worker = f"w{index}"
        stats.observe(beat(worker, WorkerState.WARMING), 0.0, saturated=False)
        stats.observe(beat(worker, WorkerState.READY, cold_start_s=cold), 1.0, saturated=False)
        stats.observe(beat(worker, WorkerState.READY, cold_start_s=cold), 2.0, saturated=False)
    assert stats.cold_start_s == 3.0  # 9 s has rolled out of the last two


def test_workers_are_counted_by_state_and_expire() -> None:
    stats = ReplicaStats(expire_after_s=3.0)
    stats.observe(beat("a", WorkerState.READY), 0.0, saturated=False)
    stats.observe(beat("b", WorkerState.WARMING), 0.0, saturated=False)
    stats.observe(beat("c", WorkerState.READY), 0.0, saturated=False)
    stats.observe(beat("c", WorkerState.STOPPED), 1.0, saturated=False)
    assert (stats.count(), stats.count(WorkerState.READY)) == (2, 1)
    stats.observe(beat("a", WorkerState.READY), 4.0, saturated=False)
    stats.expire(4.0)
    assert stats.count() == 1


def test_warming_workers_report_how_long_they_have_been_starting() -> None:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    stats = ReplicaStats()
    for worker, state, age in (("a", WorkerState.WARMING, 4), ("b", WorkerState.READY, 40)):
        stats.observe(
            Heartbeat(
                worker_id=worker,
                function="tiny",
                state=state,
                started_at=started,
                sent_at=started + timedelta(seconds=age),
            ),
            10.0,
            saturated=False,
        )
    # 4 s old when it beat at 10.0, 2 s since: 6 s; the ready worker is not warming
    assert stats.warming_ages(12.0) == pytest.approx((6.0,))


def test_the_watcher_puts_warming_workers_in_its_observation() -> None:
    class _Nats:
        def jetstream(self) -> object:
            return object()

    clock = [100.0]
    watcher = FunctionWatcher(_Nats(), "tiny", clock=lambda: clock[0])  # type: ignore[arg-type]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    warming = Heartbeat(
        worker_id="w", function="tiny", state=WorkerState.WARMING, started_at=now, sent_at=now
    )
    watcher.replicas.observe(warming, 100.0, saturated=False)
    watcher.last_ok = 100.0
    clock[0] = 101.5
    assert watcher.observation().warming_s == pytest.approx((1.5,))


def test_a_ready_worker_serves_once_it_has_finished_a_job() -> None:
    stats = ReplicaStats()
    stats.observe(beat("warming", WorkerState.WARMING), 0.0, saturated=True)
    stats.observe(beat("first", WorkerState.READY), 0.0, saturated=True)  # just ready
    stats.observe(beat("busy", WorkerState.READY, in_flight=2), 0.0, saturated=True)
    assert stats.serving() == 0
    stats.observe(beat("first", WorkerState.READY, in_flight=2, jobs_completed=1), 1.0, True)
    assert stats.serving() == 1
    stats.observe(beat("first", WorkerState.DRAINING, jobs_completed=5), 2.0, saturated=True)
    assert stats.serving() == 0
