"""The scaler's commands, mounted on `surge` through the `surge.commands` entry point.

surge scaler serve                           KEDA external-push scaler (gRPC :9090, metrics :8080)
surge up                                     nats-server + scaler + workers scaled 0..N locally
surge prewarm --at +10m --rate 50 --for 15m  store a pre-warm plan for a campaign
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from function.contract.settings import DEFAULT_FUNCTION, WorkerSettings
from function.telemetry import configure_logging

__all__ = ["demo_command", "prewarm_command", "register", "scaler_app", "up_command"]

scaler_app = typer.Typer(help="The scaling brain: KEDA external scaler.", no_args_is_help=True)
console = Console(stderr=True)

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="SURGE_NATS_URL", help="NATS server URL.")
]
Function = Annotated[
    str, typer.Option("--function", "-f", envvar="SURGE_FUNCTION", help="Function to scale.")
]


@scaler_app.command("serve")
def serve(
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port (default 9090, SURGE_SCALER_GRPC_PORT).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus port, 0 = off (default 8080).")
    ] = None,
) -> None:
    """Serve KEDA's external-push scaler contract until SIGTERM (NATS from SURGE_NATS_URL)."""
    from scaler.config import ScalerSettings
    from scaler.server import run_scaler

    worker = WorkerSettings()
    configure_logging(worker.log_level)
    settings = ScalerSettings()
    if grpc_port is not None:
        settings.grpc_port = grpc_port
    if metrics_port is not None:
        settings.metrics_port = metrics_port
    asyncio.run(run_scaler(settings, worker))


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
) -> None:
    """One machine: nats-server, the scaler, and 0..N workers it starts and drains itself."""
    from scaler.stack import run_up

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
