"""`surge loadgen`: run a load profile against NATS, compare runs, simulate scaling policies.

surge loadgen run --profile marketing-spike --rate 2 --duration 60 --embedded
surge loadgen run --profile traffic.csv --nats-url nats://nats.example:4222
surge loadgen compare reports/loadgen-a/report.json reports/loadgen-b/report.json
surge loadgen simulate --profile marketing-spike --policy keda-default --policy surge
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer
from rich.console import Console

from function.contract.settings import DEFAULT_FUNCTION, servers_from
from function.transport.connect import NatsUnreachable
from loadgen.cost import cost_command
from loadgen.run.profiles import Profile, profile_from_options
from loadgen.sim.cli import simulate

__all__ = ["is_loopback_url", "loadgen_app", "register"]

DEFAULT_URL = "nats://127.0.0.1:4222"

loadgen_app = typer.Typer(
    help="Load generation, reports and the scaling-policy simulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
loadgen_app.command()(simulate)
console = Console()
err_console = Console(stderr=True)

ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="constant, step, ramp, marketing-spike, or a CSV file of `time,rate` rows.",
    ),
]
RateOpt = Annotated[float, typer.Option(help="Base rate in jobs/s (the quiet level of a spike).")]
FactorOpt = Annotated[
    float | None,
    typer.Option(help="Peak / base rate (step 4, ramp 10, marketing-spike 30 by default)."),
]
DurationOpt = Annotated[
    float | None,
    typer.Option(help="Profile length in s (built-ins: 60; a CSV is stretched to it if given)."),
]
RateScaleOpt = Annotated[float, typer.Option(help="Multiply every rate of the profile by this.")]


def make_profile(
    profile: str, rate: float, factor: float | None, duration: float | None, rate_scale: float
) -> Profile:
    """The profile the options describe; bad options exit with a usage error."""
    try:
        return profile_from_options(profile, rate, factor, duration, rate_scale)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc


def is_loopback_url(url: str) -> bool:
    """True for a NATS URL, or comma-separated URLs, all on this machine (localhost,
    127.0.0.0/8, ::1)."""
    servers = servers_from(url)
    return bool(servers) and all(_is_loopback_server(server) for server in servers)


def _is_loopback_server(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_url(flag: str | None) -> str:
    """`--nats-url` as given; otherwise SURGE_NATS_URL or the default, loopback only."""
    if flag:
        return flag
    url = os.environ.get("SURGE_NATS_URL") or DEFAULT_URL
    if not is_loopback_url(url):
        raise typer.BadParameter(
            f"{url} is not a loopback address: pass it as --nats-url to load a remote server",
            param_hint="--nats-url",
        )
    return url


@contextmanager
def _no_nats_hint() -> Iterator[None]:
    """No NATS server at the URL: one line naming the ways to get one, exit status 2."""
    try:
        yield
    except NatsUnreachable as exc:
        err_console.print(
            f"surge loadgen: {exc}: start one (`surge nats` or `surge up`), or pass --embedded "
            "for a private server and workers",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2) from None


@loadgen_app.command()
def run(
    profile: ProfileOpt = "marketing-spike",
    rate: RateOpt = 2.0,
    factor: FactorOpt = None,
    duration: DurationOpt = None,
    rate_scale: RateScaleOpt = 1.0,
    max_jobs: Annotated[int | None, typer.Option(help="Stop publishing after this many.")] = None,
    max_time: Annotated[
        float | None, typer.Option(help="Stop publishing after this many s.")
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="After the arrivals, wait this long (s) for the last results.")
    ] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed of the arrival process.")] = 1,
    function: Annotated[
        str, typer.Option("--function", "-f", help="Function to load (default: as `surge worker`).")
    ] = DEFAULT_FUNCTION,
    high_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of jobs sent with priority high.")
    ] = 0.0,
    image: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Job payload (default: a 16x16 PNG)."),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(help="NATS server; without it only loopback (SURGE_NATS_URL) is used."),
    ] = None,
    embedded: Annotated[
        bool, typer.Option(help="Start a private nats-server and worker processes for the run.")
    ] = False,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes with --embedded.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default reports/...).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while running.")] = True,
) -> None:
    """Run a profile open-loop; write report.json + PNGs; exit 1 if any job is missing."""
    from loadgen.report.hints import hints_table, lost_hints
    from loadgen.report.tables import summary_table, write_report
    from loadgen.run.runner import payload_for, run_profile

    shape = make_profile(profile, rate, factor, duration, rate_scale)
    url = resolve_url(nats_url) if not embedded else ""
    out = out or Path("reports") / f"loadgen-{shape.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    payload, content_type = payload_for(image)
    with _no_nats_hint():
        report = asyncio.run(
            run_profile(
                shape,
                url=url,
                function=function,
                payload=payload,
                content_type=content_type,
                seed=seed,
                high_fraction=high_fraction,
                max_jobs=max_jobs,
                max_time=max_time,
                drain_timeout=drain_timeout,
                embedded_workers=workers if embedded else None,
                out=out,
                console=err_console if progress else None,
            )
        )
    report = write_report(report, out)
    console.print(summary_table(report))
    console.print(f"report: {out}/report.json, latency.png, load.png")
    if report.usage is not None:
        console.print(f"its GPU-seconds and bill: surge cost {out}/report.json")
    if not report.ok:
        err_console.print(
            f"[bold red]{report.accounting.lost} job(s) without an outcome "
            f"(missing {report.accounting.missing}, "
            f"rejected {sum(report.accounting.rejected.values())})[/]"
        )
        err_console.print(hints_table(lost_hints(report)))
        raise typer.Exit(1)


@loadgen_app.command()
def compare(
    a: Annotated[Path, typer.Argument(exists=True, help="First report.json (or its directory).")],
    b: Annotated[Path, typer.Argument(exists=True, help="Second report.json (or its directory).")],
) -> None:
    """Set two runs side by side, with B/A for every figure."""
    from loadgen.report.tables import compare_table, load_report

    console.print(compare_table(load_report(a), load_report(b)))


def register(app: typer.Typer) -> None:
    """Mount `surge loadgen` (the `surge.commands` entry point)."""
    app.add_typer(loadgen_app, name="loadgen")
    app.command("cost")(cost_command)
