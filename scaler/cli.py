"""The scaler's commands, mounted on `surge` through the `surge.commands` entry point.

surge scaler serve                           KEDA external-push scaler (gRPC :9090, metrics :9092)
surge up                                     nats-server + scaler + workers scaled 0..N locally
surge up --secure --tenants acme,globex      the same with mutual TLS, users and tenants' streams
surge prewarm --at +10m --rate 50 --for 15m  store a pre-warm plan for a campaign
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from function.contract.settings import DEFAULT_FUNCTION, WorkerSettings
from function.telemetry import configure_logging

if TYPE_CHECKING:
    from scaler.config import ScalerSettings

__all__ = ["demo_command", "prewarm_command", "register", "scaler_app", "up_command"]

scaler_app = typer.Typer(help="The scaling brain: KEDA external scaler.", no_args_is_help=True)
console = Console(stderr=True)

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="SURGE_NATS_URL", help="NATS server URL.")
]
Function = Annotated[
    str, typer.Option("--function", "-f", envvar="SURGE_FUNCTION", help="Function to scale.")
]


def _tls_option(flag: str, env: str, text: str) -> Any:
    return typer.Option(
        flag, help=f"{text} ({env}).", rich_help_panel="TLS to KEDA (default: plaintext)"
    )


@scaler_app.command("serve")
def serve(
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port (default 9090, SURGE_SCALER_GRPC_PORT).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Prometheus port, 0 = off (default 9092, SURGE_SCALER_METRICS_PORT)."),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            help="Plaintext port serving only gRPC health checks, for the kubelet's gRPC "
            "probes when gRPC is TLS; 0 = off (default 0, SURGE_SCALER_HEALTH_PORT)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        _tls_option(
            "--grpc-tls-cert", "SURGE_SCALER_TLS_CERT", "Serve TLS with this PEM certificate chain"
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        _tls_option("--grpc-tls-key", "SURGE_SCALER_TLS_KEY", "Its PEM private key, unencrypted"),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        _tls_option(
            "--grpc-tls-client-ca",
            "SURGE_SCALER_TLS_CLIENT_CA",
            "Mutual TLS: require client certificates signed by this PEM CA",
        ),
    ] = None,
) -> None:
    """Serve KEDA's external-push scaler contract until SIGTERM (NATS from SURGE_NATS_URL)."""
    from scaler.config import ScalerTlsError
    from scaler.server import run_scaler

    overrides = {
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "health_port": health_port,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_client_ca": tls_client_ca,
    }
    settings = _checked_settings({k: v for k, v in overrides.items() if v is not None})
    worker = WorkerSettings()
    configure_logging(worker.log_level)
    try:
        asyncio.run(run_scaler(settings, worker))
    except ScalerTlsError as exc:  # a file changed since the check
        _fail(str(exc))


def _checked_settings(overrides: dict[str, Any]) -> ScalerSettings:
    """`ScalerSettings` from the environment and the flags, TLS files read and checked."""
    from scaler.config import ScalerSettings, ScalerTlsError

    try:
        settings = ScalerSettings(**overrides)
        settings.server_tls()
    except ValidationError as exc:  # InvalidSettings: one line naming the variables
        _fail(str(exc))
    except ScalerTlsError as exc:
        _fail(str(exc))
    return settings


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2: a setting to fix, not a crash."""
    typer.echo(f"surge scaler serve: {message}", err=True)
    raise typer.Exit(2)


def up_command(
    function: Function = DEFAULT_FUNCTION,
    max_workers: Annotated[int, typer.Option(help="Most worker processes at once.")] = 2,
    cooldown: Annotated[
        float, typer.Option(help="Seconds of lower demand before workers drain.")
    ] = 10.0,
    port: Annotated[int, typer.Option(help="nats-server client port.")] = 4222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store.")] = Path(".cache/surge/nats"),
    log_dir: Annotated[Path, typer.Option(help="Worker and server logs.")] = Path(
        ".cache/surge/local"
    ),
    grpc_port: Annotated[int, typer.Option(help="Also serve KEDA's gRPC here (0 = no).")] = 0,
    metrics_port: Annotated[int, typer.Option(help="Scaler metrics port (0 = no).")] = 0,
    cluster: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="nats-server nodes: N > 1 runs a loopback cluster, replicas N."
        ),
    ] = 1,
    secure: Annotated[
        bool,
        typer.Option(
            help="Mutual TLS and a password (one node), with throw-away keys and certificates "
            "in --secrets-dir; workers and the scaler connect as the trusted user.",
            rich_help_panel="Security",
        ),
    ] = False,
    secrets_dir: Annotated[
        Path,
        typer.Option(
            help="Where --secure keeps its keys, certificates and passwords.",
            rich_help_panel="Security",
        ),
    ] = Path(".cache/surge/secure"),
    tenants: Annotated[
        list[str] | None,
        typer.Option(
            "--tenants",
            help="With --secure: a NATS user and a job stream for each tenant "
            "(comma-separated); prints how each connects.",
            rich_help_panel="Security",
        ),
    ] = None,
) -> None:
    """One machine: nats-server, the scaler, and 0..N workers it starts and drains itself."""
    from function.commands.tenants import check_secure_flags, parse_tenants, tenants_connect
    from scaler.stack import run_up

    names = parse_tenants(tenants)
    check_secure_flags(secure, cluster, names)
    stack = None
    if secure:
        from function.local.secure_stack import secure_stack

        try:
            stack = secure_stack(secrets_dir, f"nats://127.0.0.1:{port}", names)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tenants") from None

    def ready() -> None:
        if stack is None:
            return
        lines = [f"  export {name}={value}" for name, value in stack.env.items()]
        typer.echo("operators and workers (trusted user):\n" + "\n".join(lines), err=True)
        if stack.tenants:
            typer.echo(tenants_connect(stack, function), err=True)

    configure_logging(WorkerSettings().log_level)
    urls = ",".join(f"nats://127.0.0.1:{port + i}" for i in range(cluster))
    console.print(
        f"jobs to {urls} (surge.jobs.<priority>.{function}); 0..{max_workers} workers; Ctrl-C stops"
    )
    run_up(
        function=function,
        max_workers=max_workers,
        cooldown_s=cooldown,
        port=port,
        store_dir=store_dir,
        log_dir=log_dir,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        cluster=cluster,
        secure=stack,
        on_ready=ready,
    )


def prewarm_command(
    at: Annotated[
        str | None, typer.Option(help="Campaign start: RFC 3339, Unix seconds, or +10m.")
    ] = None,
    rate: Annotated[float, typer.Option(help="Expected jobs/s during the campaign.")] = 0.0,
    duration: Annotated[str, typer.Option("--for", help="Campaign length, e.g. 15m.")] = "10m",
    replicas: Annotated[int, typer.Option(help="Replicas wanted (instead of a rate).")] = 0,
    function: Function = DEFAULT_FUNCTION,
    nats_url: NatsUrl = "nats://127.0.0.1:4222",
    list_plans: Annotated[bool, typer.Option("--list", help="List stored plans.")] = False,
    cancel: Annotated[str | None, typer.Option(help="Remove the plan with this id.")] = None,
) -> None:
    """Pre-warm for a known campaign: replicas are warm when it starts (lead = cold start)."""
    from function.transport.connect import open_nats
    from scaler.prewarm import (
        PrewarmPlan,
        delete_plan,
        load_plans,
        parse_at,
        parse_duration,
        store_plan,
    )

    async def act() -> None:
        nc = await open_nats(nats_url, name="surge-prewarm")
        js = nc.jetstream()
        try:
            if cancel:
                found = await delete_plan(js, function, cancel)
                typer.echo(f"{cancel}\t{'removed' if found else 'not found'}")
            elif list_plans:
                for p in await load_plans(js, function):
                    ended = " (ended)" if p.end <= datetime.now(UTC) else ""
                    typer.echo(
                        f"{p.id}\t{p.start.isoformat()}\t{p.duration_s:.0f}s\t"
                        f"rate={p.rate:g}\treplicas={p.replicas}{ended}"
                    )
            else:
                if at is None:
                    raise typer.BadParameter("give --at (or --list / --cancel)")
                plan = PrewarmPlan.new(
                    function,
                    start=parse_at(at),
                    duration_s=parse_duration(duration),
                    rate=rate,
                    replicas=replicas,
                )
                await store_plan(js, plan, replicas=WorkerSettings().stream_replicas)
                typer.echo(f"{plan.id}\t{plan.start.isoformat()}\t{plan.end.isoformat()}")
        finally:
            await nc.drain()

    try:
        asyncio.run(act())
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def demo_command(
    jobs: Annotated[int, typer.Option(help="How many jobs the spike publishes.")] = 48,
    out: Annotated[Path, typer.Option(help="Where masks and the report go.")] = Path("demo-output"),
    workers: Annotated[
        int, typer.Option(help="Most worker processes (on CPU, processes beat threads).")
    ] = 2,
    cooldown: Annotated[float, typer.Option(help="Idle seconds before a worker drains.")] = 5.0,
    function: Function = DEFAULT_FUNCTION,
) -> None:
    """A spike of real jobs on the embedded stack: workers scale from zero and back."""
    from scaler.demo import run_demo

    ok = run_demo(
        jobs=jobs,
        out=out,
        max_workers=workers,
        function=function,
        console=console,
        cooldown_s=cooldown,
    )
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Mount the scaler's commands on `surge` (the `surge.commands` entry point)."""
    app.add_typer(scaler_app, name="scaler")
    app.command("up")(up_command)
    app.command("prewarm")(prewarm_command)
    app.command("demo")(demo_command)
