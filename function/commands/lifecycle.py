"""`surge status` and `surge cancel`: follow a job, stop jobs, call off a campaign.

surge status JOB_ID [--wait] [--json]      queued (backlog), running (worker), or final
surge cancel JOB_ID...                      cancel queued or running jobs
surge cancel --function F --all             every queued job of F (a campaign called off)

A job submitted by `surge submit` or `SurgeClient.submit` carries a ticket, so it can be
found while queued; one published some other way (`nats pub`) is known once it has a
result, or while a worker holds it.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from function.commands.jobs import connect_client, one_line_errors
from function.commands.options import DEFAULT_NATS_URL, NatsUrl, check_job_id
from function.commands.outputs import elided_json
from function.contract.lifecycle import JobState, JobView
from function.contract.settings import Priority

__all__ = ["cancel", "status"]

console = Console(stderr=True)


def _ago(when: datetime | None) -> str:
    if when is None:
        return ""
    return f"{(datetime.now(UTC) - when).total_seconds():.1f} s ago"


def describe(view: JobView) -> str:
    """One tab-separated line: job id, state, and what it means."""
    parts = [view.job_id, view.state.value]
    if view.function:
        parts.append(f"{view.function}" + (f" ({view.priority.value})" if view.priority else ""))
    if view.state is JobState.QUEUED:
        if view.backlog is not None:
            parts.append(f"{view.backlog} job(s) waiting for this function and priority")
        parts.append(f"submitted {_ago(view.submitted_at)}")
    if view.state is JobState.RUNNING:
        parts.append(f"on worker {view.worker} since {_ago(view.running_since)}")
    result = view.result
    if result is not None and result.error is not None and view.state is JobState.FAILED:
        parts.append(f"{result.error.code.value}: {result.error.message}")
    elif result is not None and result.error is not None:
        parts.append(result.error.message)
    elif result is not None:
        parts.append(f"{len(result.outputs)} output(s) in {result.timings.total_ms:.0f} ms")
    if view.detail:
        parts.append(view.detail)
    return "\t".join(parts)


def _print(view: JobView, as_json: bool) -> None:
    if not as_json:
        typer.echo(describe(view))
        return
    doc = view.model_dump(mode="json", exclude={"result"})
    if view.result is not None:
        doc["result"] = json.loads(elided_json(view.result))
    typer.echo(json.dumps(doc, indent=2))


def status(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow it until it is final, a line per change.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="The status as JSON.")] = False,
) -> None:
    """Where a job is: queued (with the backlog ahead), running (on which worker, since
    when), done or failed (its result), cancelled, expired, or unknown (exit 1)."""
    check_job_id(job_id)

    async def follow() -> JobView:
        from function.transport.lifecycle import JobLifecycle

        async with await connect_client(nats_url) as client:
            jobs = JobLifecycle(client.nc, client.tenant)
            view = await jobs.status(job_id)
            _print(view, as_json)
            deadline = time.monotonic() + timeout
            while wait and not view.state.final and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                now = await jobs.status(job_id)
                if now.state is not view.state:
                    _print(now, as_json)
                view = now
            return view

    with one_line_errors():
        view = asyncio.run(follow())
    if view.state is JobState.UNKNOWN or (wait and view.state is not JobState.DONE):
        raise typer.Exit(1)


def cancel(
    job_ids: Annotated[list[str] | None, typer.Argument(help="Job ids to cancel.")] = None,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="With --all: whose jobs.")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every queued job of --function (a campaign).")
    ] = False,
    priority: Annotated[
        Priority | None, typer.Option(help="With --all: only this priority.")
    ] = None,
) -> None:
    """Cancel jobs: a queued one is removed and answered `cancelled`; a running one is
    answered `cancelled` and its output dropped; a finished one is left as it is (exit 1
    when any job could not be cancelled)."""
    if everything != (function is not None) or (everything and job_ids):
        raise typer.BadParameter("give job ids, or --function F --all (not both)")
    if not everything and not job_ids:
        raise typer.BadParameter("give job ids to cancel, or --function F --all")
    for job_id in job_ids or []:
        check_job_id(job_id, "JOB_IDS")
    with one_line_errors():
        if function is not None:
            _cancel_all(nats_url, function, priority)
            return
        views = asyncio.run(_cancel_each(nats_url, job_ids or []))
    for view in views:
        typer.echo(describe(view))
    if any(_not_cancelled_now(view) for view in views):
        raise typer.Exit(1)


def _not_cancelled_now(view: JobView) -> bool:
    return view.state is not JobState.CANCELLED or view.detail.startswith("already")


async def _cancel_each(nats_url: str, job_ids: list[str]) -> list[JobView]:
    from function.transport.lifecycle import JobLifecycle

    async with await connect_client(nats_url) as client:
        jobs = JobLifecycle(client.nc, client.tenant)
        return [await jobs.cancel(job_id) for job_id in job_ids]


def _cancel_all(nats_url: str, function: str, priority: Priority | None) -> None:
    from function.transport.lifecycle import JobLifecycle

    priorities = (priority,) if priority else (Priority.HIGH, Priority.NORMAL)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    async def run() -> tuple[int, int, int]:
        async with await connect_client(nats_url) as client:
            jobs = JobLifecycle(client.nc, client.tenant)
            task = progress.add_task(f"cancelling {function}'s queued jobs", total=None)

            def seen(count: int) -> None:
                progress.update(task, description=f"cancelling {function}'s jobs: {count}")

            return await jobs.cancel_all(function, priorities, on_progress=seen)

    with progress:
        never_ran, stopped, final = asyncio.run(run())
    typer.echo(
        f"cancelled {never_ran + stopped} job(s) of {function}: {never_ran} never ran "
        f"(work saved), {stopped} stopped while running (output dropped); "
        f"{final} already had a result"
    )
