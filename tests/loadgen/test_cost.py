"""`surge cost` on a hand-made run: every figure checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from function.cli import full_app
from scaler.bill import Usage, make_bill

runner = CliRunner()
APP = full_app()

# 0 replicas until t=10, 2 from 10 to 40, 1 from 40 to 70, 0 at 70: 60 + 30 = 90 s.
USAGE = Usage(
    timeline=[(0.0, 0), (10.0, 2), (40.0, 1), (70.0, 0)],
    compute_s=30.0,
    cold_start_s=5.0,
    arrivals_s=[10.0 + i * 0.5 for i in range(40)],  # 40 jobs over 20 s
)


def test_the_bill_splits_replica_seconds_into_used_starting_and_idle() -> None:
    bill = make_bill(USAGE, price_per_gpu_hour=3.6)
    assert bill.replica_s == pytest.approx(90.0)
    assert bill.starts == 2 and bill.starting_s == pytest.approx(10.0)  # 2 x 5 s
    assert bill.used_s == pytest.approx(30.0)
    assert bill.idle_s == pytest.approx(50.0)  # 90 - 30 - 10
    assert bill.cost == pytest.approx(0.09)  # 90 s at $3.6 an hour
    assert bill.fixed_replicas == 2 and bill.fixed_s == pytest.approx(140.0)  # 2 x 70 s
    assert bill.fixed_cost == pytest.approx(0.14)


def test_surge_cost_reads_a_demo_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"jobs": 40, "usage": USAGE.model_dump()}))
    got = runner.invoke(APP, ["cost", str(report), "--price-per-gpu-hour", "3.6", "--json"])
    assert got.exit_code == 0, got.output
    figures = json.loads(got.output)
    assert figures["replica_s"] == pytest.approx(90.0) and figures["cost"] == pytest.approx(0.09)
    assert figures["idle_s"] == pytest.approx(50.0) and figures["fixed_s"] == pytest.approx(140.0)
    # KEDA's defaults keep a replica 300 s (cooldownPeriod) after the last job: it costs more.
    assert figures["keda_default_s"] > 300.0
    assert figures["keda_default_cost"] == pytest.approx(figures["keda_default_s"] / 1000)
    table = runner.invoke(APP, ["cost", str(report)])
    assert table.exit_code == 0, table.output
    assert "idle but warm" in table.output and "KEDA defaults" in table.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "cannot read"),
        ('{"usage": {"timeline": "x"}}', "holds no run usage"),
        ('{"run_id": "r", "usage": null}', "heard no worker's heartbeat"),
    ],
)
def test_a_bad_report_is_a_clear_error(tmp_path: Path, content: str, says: str) -> None:
    report = tmp_path / "report.json"
    report.write_text(content)
    got = runner.invoke(APP, ["cost", str(report)])
    text = " ".join(got.output.split())  # rich wraps long lines
    assert got.exit_code == 2 and says in text and "Traceback" not in text


def test_compute_of_runners_side_by_side_never_hides_the_cold_starts() -> None:
    # two runners on one replica for 20 s: their shares add up to 38 s of compute
    usage = Usage(timeline=[(0.0, 1), (20.0, 1)], compute_s=38.0, cold_start_s=2.0)
    bill = make_bill(usage)
    assert bill.starting_s == pytest.approx(2.0)  # the measured start, whatever compute says
    assert bill.used_s == pytest.approx(18.0) and bill.idle_s == pytest.approx(0.0)


def test_replicas_up_before_the_run_are_not_charged_a_start() -> None:
    usage = Usage(
        timeline=[(0.0, 2), (10.0, 3), (20.0, 0)], compute_s=5.0, cold_start_s=2.0, running_before=2
    )
    bill = make_bill(usage)
    assert bill.starts == 1 and bill.starting_s == pytest.approx(2.0)  # only the third
    assert bill.replica_s == pytest.approx(50.0) and bill.used_s == pytest.approx(5.0)


def test_the_keda_row_reaches_bills_through_its_entry_point() -> None:
    from scaler.bill import comparisons

    bill = make_bill(USAGE)
    rows = comparisons(USAGE, bill)
    assert list(rows) == ["KEDA defaults, same arrivals"]
    seconds, cost = rows["KEDA defaults, same arrivals"]
    assert seconds > 300.0 and cost == pytest.approx(seconds / 3600 * bill.price_per_gpu_hour)
    idle = Usage(timeline=[(0.0, 0), (5.0, 0)], compute_s=0.0, cold_start_s=1.0)
    assert comparisons(idle, make_bill(idle)) == {}  # no arrivals: nothing to compare


TIMED = USAGE.model_copy(
    update={"jobs": [(10.0 + i * 0.5, 0.75) for i in range(40)]}  # 40 x 0.75 s = 30 s
)


def test_a_time_range_is_billed_from_the_replicas_then_and_the_jobs_answered_in_it() -> None:
    part = TIMED.within(30.0, 50.0)  # 2 replicas (up since 10 s) to 40 s, then 1
    assert part.timeline == [(30.0, 2), (40.0, 1), (50.0, 0)] and part.running_before == 2
    assert part.compute_s == pytest.approx(0.75 * 0)  # the jobs were all answered by 29.5 s
    bill = make_bill(TIMED.within(20.0, 45.0))
    assert bill.replica_s == pytest.approx(2 * 20 + 1 * 5)
    assert bill.starts == 0 and bill.starting_s == 0.0  # both started at 10 s, before it
    assert bill.used_s == pytest.approx(0.75 * 20)  # answered at 20.0 ... 29.5 s
    whole = make_bill(TIMED.within(0.0, 70.0))
    assert whole.model_dump() == make_bill(TIMED).model_dump()


@pytest.mark.parametrize(
    ("usage", "start", "end", "says"),
    [
        (TIMED, 80.0, 90.0, "misses the run's timeline"),
        (TIMED, 30.0, 20.0, "misses the run's timeline"),
        (USAGE, 0.0, 30.0, "keeps no per-job times"),
    ],
)
def test_a_range_that_cannot_be_billed_says_why(
    usage: Usage, start: float, end: float, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        usage.within(start, end)


def test_surge_cost_bills_a_time_range(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"usage": TIMED.model_dump()}))
    got = runner.invoke(APP, ["cost", str(report), "--from", "20", "--to", "45", "--json"])
    assert got.exit_code == 0, got.output
    figures = json.loads(got.output)
    assert figures["replica_s"] == pytest.approx(45.0) and figures["used_s"] == pytest.approx(15.0)
    bad = runner.invoke(APP, ["cost", str(report), "--from", "100"])
    assert bad.exit_code == 2 and "misses the run's timeline" in bad.output


def test_ranges_side_by_side_bill_each_job_once() -> None:
    usage = Usage(
        timeline=[(0.0, 1), (20.0, 0)],
        compute_s=2.0,
        cold_start_s=0.0,
        jobs=[(10.0, 1.0), (20.0, 1.0)],  # one on the boundary, one at the very end
        arrivals_s=[10.0, 19.0],
    )
    first, second = usage.within(0.0, 10.0), usage.within(10.0, 20.0)
    assert first.compute_s + second.compute_s == pytest.approx(usage.compute_s)
    assert len(first.arrivals_s) + len(second.arrivals_s) == 2


def test_a_timeline_of_ready_replicas_adds_the_cold_starts() -> None:
    # a load run sees a worker once it is ready: its 10 s start came before, on top
    usage = Usage(timeline=[(0.0, 0), (10.0, 1), (20.0, 0)], compute_s=8.0, cold_start_s=10.0)
    carved = make_bill(usage)
    assert carved.replica_s == pytest.approx(10.0) and carved.used_s == pytest.approx(0.0)
    ready = make_bill(usage.model_copy(update={"ready_only": True}))
    assert ready.replica_s == pytest.approx(20.0) and ready.starting_s == pytest.approx(10.0)
    assert ready.used_s == pytest.approx(8.0) and ready.idle_s == pytest.approx(2.0)
