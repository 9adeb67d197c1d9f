"""Every GPU-second accounted for: a batch's compute shares add up to its measured
inference time; busy, idle-but-warm and cold-start seconds on a fake clock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from function.contract.settings import Priority, WorkerSettings
from function.contract.wire import JobRequest
from function.engine.accounting import BusyClock, WarmMeter
from function.engine.finish import Completion
from function.engine.settle import Settler
from function.telemetry import METRICS
from tests.function.engine.test_engine import MODEL, Engine, FakeModel, MemoryStore, job


@pytest.fixture
def completing() -> object:
    log: list[tuple[str, str]] = []
    store = MemoryStore(log)
    settings = WorkerSettings(function="fake", max_deliver=3, nak_delay_s=0.0)
    settler = Settler(store, settings, MODEL, lambda job: None)  # type: ignore[arg-type]
    pool = ThreadPoolExecutor(1)
    completion = Completion(FakeModel(), settler, settings, pool)  # type: ignore[arg-type]
    yield Engine(log, store, settler, completion, [], pool)
    pool.shutdown()


async def test_the_compute_shares_of_a_batch_add_up_to_its_measured_time(
    completing: Engine,
) -> None:
    jobs = [job(completing, name, value=2.0) for name in "abc"]
    jobs[0].prep_ns = 4_000_000  # 4 ms of decode and preprocess, measured at admission
    past = datetime.now(UTC) - timedelta(seconds=1)  # late: answered with an error
    jobs[2].request = JobRequest(
        job_id="c", function="fake", priority=Priority.NORMAL, deadline=past
    )
    out = FakeModel().run_batch([j.ready_sample for j in jobs])
    start_ns, end_ns = 1_000_000_000, 1_000_000_000 + 30_000_000  # a 30 ms batch
    await completing.completion.complete(jobs, out, start_ns, end_ns)
    results = [completing.store.results[name] for name in "abc"]
    assert results[2].error is not None  # an error result still carries its share
    inference_ms = [r.timings.inference_ms for r in results]
    assert inference_ms == pytest.approx([30.0] * 3)
    shares = [r.timings.inference_ms / r.timings.batch_size for r in results]
    assert sum(shares) == pytest.approx(30.0)
    computes = [r.timings.compute_ms for r in results]
    for compute, share in zip(computes, shares, strict=True):
        assert compute >= share
    assert computes[0] >= 10.0 + 4.0  # its share plus its own preprocessing
    assert sum(computes) >= 30.0 + 4.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_time_counts_overlapping_batches_once() -> None:
    clock = FakeClock()
    busy = BusyClock(clock)
    busy.begin()
    clock.now += 2
    busy.begin()  # a second runner starts while the first runs
    clock.now += 1
    busy.end()
    clock.now += 1
    assert busy.busy_s() == pytest.approx(4.0)  # the running batch's part counts
    busy.end()
    clock.now += 5
    busy.end()  # one end too many changes nothing
    assert busy.busy_s() == pytest.approx(4.0)


def test_the_warm_meter_counts_idle_and_cold_start_seconds() -> None:
    clock = FakeClock()
    busy = BusyClock(clock)
    meter = WarmMeter("accounting-test", busy, clock=clock)
    idle = METRICS.idle_warm.labels("accounting-test")
    cold = METRICS.cold_start_total.labels("accounting-test")
    assert meter.tick() == 0.0  # not ready yet: nothing is idle time
    meter.ready(7.5)
    assert cold._value.get() == pytest.approx(7.5)
    clock.now += 1.0
    assert meter.tick() == pytest.approx(1.0)  # warm and nothing ran
    clock.now += 0.25
    busy.begin()
    clock.now += 0.5
    busy.end()
    clock.now += 0.25
    assert meter.tick() == pytest.approx(0.5)  # half the second ran a batch
    busy.begin()
    clock.now += 3.0  # a batch runs across the tick
    assert meter.tick() == 0.0
    busy.end()
    assert meter.idle_s == pytest.approx(1.5)
    assert idle._value.get() == pytest.approx(1.5)
