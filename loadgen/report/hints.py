"""Why a load run lost jobs, and what to try: read from what the run itself saw.

    console.print(hints_table(lost_hints(report)))
    #   why: no worker of 'remove-bg' sent a heartbeat during the run (...); workers of
    #        other functions did: tiny (1)
    #   try: start one (`surge worker -f remove-bg`, ...), or ...: --function tiny

The evidence: refused publishes by reason, the workers heard from in heartbeats (of the
function and of others), whether any of them reported ready, what was answered, and the
backlog at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from function.contract.settings import JOBS_STREAM, heartbeat_subject
from loadgen.run.records import RunReport

__all__ = ["Hint", "hints_table", "lost_hints"]


@dataclass(frozen=True)
class Hint:
    """A likely cause of lost jobs and the thing to try."""

    why: str
    fix: str


def hints_table(hints: list[Hint]) -> Table:
    """`why` and `try` rows, indented, each text wrapped beside its word."""
    table = Table.grid(padding=(0, 1))
    table.add_column(width=1)
    table.add_column(style="bold")
    table.add_column()
    for hint in hints:
        table.add_row("", "why:", Text(hint.why))
        table.add_row("", "try:", Text(hint.fix))
    return table


def _refused(report: RunReport) -> Hint | None:
    rejected = report.accounting.rejected
    if not rejected:
        return None
    reasons = ", ".join(f"{reason} x{count:,}" for reason, count in sorted(rejected.items()))
    return Hint(
        why=f"{sum(rejected.values()):,} publish(es) refused ({reasons})",
        fix=f"check that the {JOBS_STREAM} stream exists and takes "
        f"surge.jobs.*.{report.config.function} (a worker or NACK creates it), and that "
        "this NATS user may publish there",
    )


def _no_worker(report: RunReport) -> Hint:
    function = report.config.function
    subject = heartbeat_subject(function)
    why = f"no worker of '{function}' sent a heartbeat during the run ({subject})"
    fix = f"start one (`surge worker -f {function}`, or `--embedded` for a private stack)"
    others = report.other_functions_seen
    if others:
        served = ", ".join(f"{name} ({count})" for name, count in others.items())
        why += f"; workers of other functions did: {served}"
        fix += f", or load the function they serve: --function {next(iter(others))}"
    return Hint(why=why, fix=fix)


def _unanswered(report: RunReport) -> Hint:
    a, function = report.accounting, report.config.function
    drain = f"the drain ({report.config.drain_timeout_s:g} s)"
    if report.workers_ready_seen == 0:
        return Hint(
            why=f"{report.workers_seen} worker(s) of '{function}' were heard from but none "
            "reported ready (still loading or warming up the model)",
            fix="wait until the workers' /health/readiness says ready before the run, or "
            f"lengthen {drain} with --drain-timeout; their logs say what they are waiting on",
        )
    if a.answered == 0:
        return Hint(
            why=f"{report.workers_ready_seen} worker(s) of '{function}' were ready but answered "
            "none of this run's jobs",
            fix="read the workers' logs; check that they use the same NATS server and "
            f"account as this run ({report.config.nats_url or 'embedded'})",
        )
    backlogs = [p.backlog for p in report.timeline if p.backlog is not None]
    left = f" (backlog at the end: {backlogs[-1]:,})" if backlogs else ""
    return Hint(
        why=f"{a.missing:,} job(s) had no result when {drain} ended{left}",
        fix="lengthen --drain-timeout or add workers; `surge result <job id>` looks a job's "
        "result up later",
    )


def lost_hints(report: RunReport) -> list[Hint]:
    """Likely causes of the run's lost jobs, most basic first; empty for a passing run."""
    hints = [hint for hint in (_refused(report),) if hint is not None]
    if report.accounting.missing:
        hints.append(_no_worker(report) if report.workers_seen == 0 else _unanswered(report))
    return hints
