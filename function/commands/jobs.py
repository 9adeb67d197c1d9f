"""`surge submit` and `surge result`: publish images as jobs, and read their results.

surge submit a.png b.jpg --wait --out DIR   publish, wait, save each result's images as files
surge result JOB_ID                         a stored result as JSON, image data elided
surge result JOB_ID --out DIR               the same, its images written as files

A wait that ends without a result says whether any worker of the function is alive (from
their heartbeats) and what to do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from nats.errors import Error as NatsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from function.commands.options import DEFAULT_NATS_URL, Function, NatsUrl, check_job_id, tenant
from function.commands.outputs import elided_json, save_result
from function.commands.workers import WorkerSightings
from function.contract.errors import SurgeError
from function.contract.nats_auth import NatsConnectError
from function.contract.quota import QuotaExceeded
from function.contract.settings import DEFAULT_FUNCTION, Priority
from function.contract.wire import ImageOutput, JobStatus, Result, ScoresOutput

if TYPE_CHECKING:
    from function.client import ResultInbox, SurgeClient

__all__ = ["connect_client", "one_line_errors", "result", "submit"]

console = Console(stderr=True)

Out = Annotated[
    Path | None,
    typer.Option(
        file_okay=False, help="Write each result here: <job>.json and its images as files."
    ),
]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A refusal (a quota, a tenant with no stream, the server's own) ends as one line and
    exit status 1."""
    try:
        yield
    except NatsConnectError:
        raise  # `main` says it, exit status 2
    except SurgeError as exc:
        typer.echo(f"surge: {exc}", err=True)
        raise typer.Exit(1) from None
    except NatsError as exc:  # a refusal or timeout from the server: no traceback
        typer.echo(f"surge: NATS: {exc}", err=True)
        raise typer.Exit(1) from None


def describe(result: Result, path: Path | str) -> str:
    """One tab-separated line: job id, input, status and what came back."""
    if result.status is JobStatus.ERROR and result.error is not None:
        return f"{result.job_id}\t{path}\terror\t{result.error.code.value}: {result.error.message}"
    parts = []
    for name, output in result.outputs.items():
        if isinstance(output, ScoresOutput):
            parts.append(
                f"{name}=" + json.dumps({k: round(v, 4) for k, v in output.scores.items()})
            )
        else:
            parts.append(f"{name}={output.width}x{output.height}")
    return f"{result.job_id}\t{path}\tok\t{' '.join(parts)}\t{result.timings.total_ms:.0f} ms"


async def connect_client(nats_url: str) -> SurgeClient:
    """A client for the tenant `surge --tenant` names, waiting `surge --wait-for-nats`."""
    from function.client import SurgeClient
    from function.transport.connect import connect_wait_s

    return await SurgeClient.connect(nats_url, tenant=tenant(), wait_s=connect_wait_s())


async def _images(client: SurgeClient, result: Result) -> dict[str, bytes]:
    """Each image output's bytes, inline or from the Object Store."""
    return {
        name: await client.output_bytes(output)
        for name, output in result.outputs.items()
        if isinstance(output, ImageOutput)
    }


async def _publish(
    client: SurgeClient,
    inbox: ResultInbox,
    images: list[Path],
    function: str,
    priority: Priority,
    outputs: list[str],
) -> dict[str, Path]:
    """Publish every image; a refusal prints the jobs queued before it, then ends the run."""
    ids: dict[str, Path] = {}
    with _progress() as progress:
        task = progress.add_task("publishing", total=len(images))
        for path in images:
            try:
                job_id = await client.submit(
                    path.read_bytes(),
                    function=function,
                    priority=priority,
                    outputs=outputs,
                    reply_to=inbox.subject,
                )
            except QuotaExceeded:
                for queued, queued_path in ids.items():  # those before it stay queued
                    typer.echo(f"{queued}\t{queued_path}")
                raise
            ids[job_id] = path
            progress.advance(task)
    return ids


async def _wait(inbox: ResultInbox, ids: dict[str, Path], timeout: float) -> dict[str, Result]:
    with _progress() as progress:
        task = progress.add_task("waiting for results", total=len(ids))
        deadline = time.monotonic() + timeout
        while len(inbox.results) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            progress.update(task, completed=len(set(inbox.results) & set(ids)))
        results = await inbox.wait(ids, timeout=0)
        progress.update(task, completed=len(results))
    return results


async def _submit(
    images: list[Path],
    nats_url: str,
    function: str,
    priority: Priority,
    wait: bool,
    out: Path | None,
    outputs: list[str],
    timeout: float,
) -> list[Result]:
    async with await connect_client(nats_url) as client:
        inbox = await client.inbox()
        ids = await _publish(client, inbox, images, function, priority, outputs)
        if not wait:
            for job_id, path in ids.items():
                typer.echo(f"{job_id}\t{path}")
            return []
        # A tenant's NATS user may not hear heartbeats: it cannot be told about workers.
        sightings = None if client.tenant else await WorkerSightings.listen(client.nc, function)
        results = await _wait(inbox, ids, timeout)
        for job_id, found in results.items():
            if out is not None:
                save_result(found, await _images(client, found), out)
            typer.echo(describe(found, ids[job_id]))
        for job_id in ids.keys() - results.keys():
            typer.echo(f"{job_id}\t{ids[job_id]}\tno result within {timeout:g} s")
        if len(results) < len(ids):
            advice = (
                sightings.advice(timeout)
                if sightings is not None
                else "`surge result JOB_ID` fetches a result later (a tenant does not see "
                "the workers' heartbeats)"
            )
            typer.echo(
                f"surge: {len(ids) - len(results)} job(s) without a result: {advice}", err=True
            )
        if sightings is not None:
            await sightings.close()
        await inbox.close()
        return list(results.values())


def submit(
    images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Image files.")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    function: Function = DEFAULT_FUNCTION,
    priority: Annotated[Priority, typer.Option(help="Job priority.")] = Priority.NORMAL,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for results.")] = False,
    out: Out = None,
    output: Annotated[
        list[str] | None, typer.Option("--output", "-o", help="Outputs to ask for, e.g. cutout.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for results.")] = 120.0,
) -> None:
    """Publish images as jobs; with --wait, print each result (and save it with --out).

    A job past the tenant's quota ends it: `quota_exceeded: ...` and exit status 1.
    """
    with one_line_errors():
        results = asyncio.run(
            _submit(images, nats_url, function, priority, wait, out, output or [], timeout)
        )
    if wait and (len(results) < len(images) or any(r.status is JobStatus.ERROR for r in results)):
        raise typer.Exit(1)


def result(
    job_id: Annotated[str, typer.Argument(help="The job id (Nats-Msg-Id).")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    out: Out = None,
) -> None:
    """Print the stored result of a job as JSON, image data elided (exit 1 when there is
    none); with --out, write it there with its images as files and print their paths."""
    check_job_id(job_id)

    async def fetch() -> tuple[Result | None, list[Path]]:
        async with await connect_client(nats_url) as client:
            found = await client.result(job_id)
            if found is None or out is None:
                return found, []
            return found, save_result(found, await _images(client, found), out)

    with one_line_errors():
        found, written = asyncio.run(fetch())
    if found is None:
        typer.echo(
            f"surge: no stored result for job {job_id!r} (none yet, or older than the "
            "results stream keeps)",
            err=True,
        )
        raise typer.Exit(1)
    if out is None:
        typer.echo(elided_json(found))
    for path in written:
        typer.echo(path)
