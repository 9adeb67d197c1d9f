"""`surge retry` and `surge dead`: jobs that ran out of attempts, run again.

surge retry JOB_ID...                         re-submit dead-lettered jobs (new ids)
surge dead list [--function F] [--limit N]    the dead-letter stream, oldest first
surge dead show JOB_ID                        one letter as JSON, its payload elided
surge dead retry JOB_ID... | --function F --all [--keep]

A retried job gets a new id, `<id>-r2` (then `-r3`, ...), carries `Surge-Retry-Of: <id>`
and is followed like any job (`surge status <id>-r2`); its dead letter is deleted unless
`--keep`. Only dead-lettered jobs keep their payload: a job that failed on bad input is
answered and dropped, so it cannot be retried (submit the input again).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from nats.errors import Error as NatsError

from function.commands.jobs import connect_client, one_line_errors
from function.commands.options import DEFAULT_NATS_URL, NatsUrl, check_job_id
from function.contract.errors import ErrorCode, SurgeError, clip
from function.contract.lifecycle import JobState, state_of_result

if TYPE_CHECKING:
    from function.client import SurgeClient
    from function.transport.deadletters import DeadEntry, DeadLetters

__all__ = ["dead_app", "describe", "retry"]

dead_app = typer.Typer(
    help="The dead-letter stream: jobs that ran out of attempts (list, show, retry).",
    no_args_is_help=True,
)

Keep = Annotated[
    bool, typer.Option("--keep", help="Keep the dead letter after retrying (default: delete).")
]
T = TypeVar("T")
_MESSAGE_CHARS = 200  # of a last error in a `dead list` line (`dead show` has all of it)
JobIds = Annotated[list[str] | None, typer.Argument(help="Job ids.", show_default=False)]


def _ago(when: datetime | None) -> str:
    if when is None:
        return ""
    seconds = (datetime.now(UTC) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def describe(entry: DeadEntry) -> str:
    """One tab-separated line: job id, function, tenant, attempts, last error, payload."""
    letter = entry.letter
    error = letter.last_error
    payload = "payload dropped" if letter.payload_dropped else f"{letter.payload_bytes} bytes"
    message = clip(" ".join(error.message.split()), _MESSAGE_CHARS)  # one line, no tabs
    return "\t".join(
        [
            letter.job_id,
            letter.function,
            letter.tenant or "-",
            f"{letter.attempts} attempt(s)",
            f"{error.code.value}: {message}",
            payload,
            f"dead-lettered {_ago(entry.written_at)}",
        ]
    )


def document(entry: DeadEntry) -> dict[str, Any]:
    """The letter as JSON, its payload replaced by its size, with its stream place."""
    doc = entry.letter.model_dump(mode="json")
    if entry.letter.payload_b64:
        doc["payload_b64"] = f"<{entry.letter.payload_bytes} bytes, elided>"
    doc["sequence"] = entry.sequence
    doc["dead_lettered_at"] = entry.written_at.isoformat() if entry.written_at else None
    return doc


def _dead_letters(client: SurgeClient) -> DeadLetters:
    from function.transport.deadletters import DeadLetters

    return DeadLetters(client.js, client.tenant)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` with one-line errors: a refusal, or a stream that cannot be read."""
    with one_line_errors():
        try:
            return asyncio.run(work)
        except NatsError as exc:  # permissions, a timeout: one line, not a traceback
            raise SurgeError(f"the dead-letter stream could not be read: {exc!r}") from None


@dead_app.command("list")
def list_letters(
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only this function's letters.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list, payloads elided.")] = False,
) -> None:
    """Dead letters, oldest first: one line each (job id, function, tenant, attempts,
    last error, payload size)."""

    async def read() -> list[DeadEntry]:
        async with await connect_client(nats_url) as client:
            return await _dead_letters(client).oldest(function, limit=limit + 1)

    entries = _run(read())
    shown, more = entries[:limit], len(entries) > limit
    if as_json:
        typer.echo(json.dumps([document(entry) for entry in shown], indent=2))
    else:
        for entry in shown:
            typer.echo(describe(entry))
    if more:
        typer.echo(f"surge: showing the oldest {limit}; --limit N shows more", err=True)
    elif not shown and not as_json:
        typer.echo("surge: no dead letters" + (f" for {function}" if function else ""), err=True)


@dead_app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
) -> None:
    """One dead letter as JSON (its payload elided to its size); exit 1 when none."""
    check_job_id(job_id)

    async def read() -> DeadEntry | None:
        async with await connect_client(nats_url) as client:
            dead = _dead_letters(client)
            found = (await dead.find([job_id])).get(job_id)
            return dead.pick(job_id, found) if found else None

    entry = _run(read())
    if entry is None:
        typer.echo(f"surge: no dead letter for job {job_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(document(entry), indent=2))


async def _why_not(client: SurgeClient, job_id: str) -> str:
    """Why a job with no dead letter cannot be retried, from its record."""
    from function.transport.deadletters import retried_as
    from function.transport.records import read_record

    record = await read_record(client.js, job_id, client.tenant)
    if record is None:
        return (
            f"job {job_id}: no dead letter and no record (never submitted, or older "
            "than the streams keep)"
        )
    if record.result is None:
        return f"job {job_id} has not finished yet (`surge status {job_id}`): nothing to retry"
    state = state_of_result(record.result)
    if state is JobState.DONE:
        return f"job {job_id} is done: nothing to retry"
    error = record.result.error
    code = error.code if error is not None else None
    if code is ErrorCode.MAX_DELIVER_EXCEEDED:
        later = await retried_as(client.js, job_id, client.tenant)
        if later is not None:
            return (
                f"job {job_id}: its dead letter is gone: it was retried as {later} "
                f"(`surge status {later}`)"
            )
        return f"job {job_id}: its dead letter is gone (older than the dead stream keeps)"
    what = f"{state.value} ({code.value})" if code is not None else state.value
    return (
        f"job {job_id} {what}: no payload kept: only dead-lettered jobs can be retried; "
        "submit the input again"
    )


async def _retry(
    nats_url: str, job_ids: Sequence[str], function: str | None, keep: bool
) -> tuple[list[str], list[str]]:
    """Retry each job (or every letter of `function`): lines to print, and problems."""
    from function.transport.deadletters import NotRetryable

    lines: list[str] = []
    problems: list[str] = []
    async with await connect_client(nats_url) as client:
        dead = _dead_letters(client)
        if function is not None:
            entries = [entry async for entry in dead.scan(function)]
        else:
            found = await dead.find(job_ids)
            entries = []
            for job_id in dict.fromkeys(job_ids):
                if job_id not in found:
                    problems.append(await _why_not(client, job_id))
                    continue
                try:
                    entries.append(dead.pick(job_id, found[job_id]))
                except NotRetryable as exc:
                    problems.append(str(exc))
        for entry in entries:
            try:
                new_id = await dead.retry(entry, client.resubmit, keep=keep)
            except NotRetryable as exc:
                problems.append(str(exc))
                continue
            lines.append(f"{entry.letter.job_id}\tretried as {new_id}")
    return lines, problems


def _retry_command(job_ids: Sequence[str], nats_url: str, function: str | None, keep: bool) -> None:
    for job_id in job_ids:
        check_job_id(job_id, "JOB_IDS")
    lines, problems = _run(_retry(nats_url, job_ids, function, keep))
    for line in lines:
        typer.echo(line)
    for problem in problems:
        typer.echo(f"surge: {problem}", err=True)
    if function is not None and not lines and not problems:
        typer.echo(f"surge: no dead letters for {function}", err=True)
    if problems:
        raise typer.Exit(1)


@dead_app.command("retry")
def dead_retry(
    job_ids: JobIds = None,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="With --all: whose letters.")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead letter of --function.")
    ] = False,
    keep: Keep = False,
) -> None:
    """Re-submit dead-lettered jobs under new ids (`<id>-r2`, ...), one line each; exit 1
    when any could not be retried."""
    if everything != (function is not None) or (everything and job_ids):
        raise typer.BadParameter("give job ids, or --function F --all (not both)")
    if not everything and not job_ids:
        raise typer.BadParameter("give job ids to retry, or --function F --all")
    _retry_command(job_ids or [], nats_url, function, keep)


def retry(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids to retry.")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    keep: Keep = False,
) -> None:
    """Re-submit failed jobs from the dead-letter stream with their original payload,
    under new ids (`<id>-r2`, ...): `<id>  retried as <new id>`. A job that failed on
    bad input kept no payload: exit 1, submit the input again."""
    _retry_command(job_ids, nats_url, None, keep)
