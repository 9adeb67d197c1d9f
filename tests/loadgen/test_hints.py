"""Why a run lost jobs: each cause the run can see gives its own hint (no NATS needed)."""

from __future__ import annotations

import io

from rich.console import Console

from loadgen.report.hints import hints_table, lost_hints
from tests.loadgen.samples import point, run_report


def test_a_passing_run_has_no_hint() -> None:
    assert lost_hints(run_report(answered_ok=5)) == []


def test_no_worker_of_the_function_names_the_workers_of_other_functions() -> None:
    report = run_report(missing=19, other_functions_seen={"tiny": 1})
    (hint,) = lost_hints(report)
    assert "no worker of 'remove-bg' sent a heartbeat" in hint.why
    assert "surge.heartbeat.remove-bg" in hint.why and "tiny (1)" in hint.why
    assert "surge worker -f remove-bg" in hint.fix and "--function tiny" in hint.fix

    (alone,) = lost_hints(run_report(missing=19))
    assert "other functions" not in alone.why and "--function" not in alone.fix


def test_workers_heard_but_never_ready() -> None:
    (hint,) = lost_hints(run_report(missing=3, workers_seen=2, workers_ready_seen=0))
    assert "2 worker(s) of 'remove-bg'" in hint.why and "none reported ready" in hint.why
    assert "--drain-timeout" in hint.fix


def test_ready_workers_that_answered_nothing() -> None:
    (hint,) = lost_hints(run_report(missing=3, workers_seen=1, workers_ready_seen=1))
    assert "answered none of this run's jobs" in hint.why
    assert "nats://127.0.0.1:4222" in hint.fix


def test_a_drain_too_short_says_what_was_left() -> None:
    timeline = [point(0, backlog=9), point(1, backlog=7), point(2)]
    report = run_report(timeline, answered_ok=4, missing=7, workers_seen=1, workers_ready_seen=1)
    (hint,) = lost_hints(report)
    assert "7 job(s) had no result when the drain (30 s) ended (backlog at the end: 7)" in hint.why
    assert "--drain-timeout" in hint.fix


def test_refused_publishes_come_first_with_their_reasons() -> None:
    report = run_report(missing=1, rejected={"no_stream": 4})
    refused, no_worker = lost_hints(report)
    assert "4 publish(es) refused (no_stream x4)" in refused.why
    assert "SURGE_JOBS" in refused.fix
    assert "no worker" in no_worker.why


def test_the_table_shows_why_and_try_without_reading_markup() -> None:
    console = Console(file=io.StringIO(), width=200)
    report = run_report(missing=1, other_functions_seen={"[bold]x": 1})
    console.print(hints_table(lost_hints(report)))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].split()[0] == "why:" and lines[1].split()[0] == "try:"
    assert "[bold]x (1)" in lines[0]
