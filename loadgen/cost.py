"""`surge cost REPORT`: a run's GPU-seconds (used, starting, idle-but-warm) and its bill,
beside a fixed fleet for the peak and KEDA's defaults for the same arrivals.

The report is the `report.json` `surge demo` writes, a `surge loadgen run` report (both
keep a `usage`), or a `Usage` alone.
KEDA's defaults come from the policy simulator (`loadgen.sim`, the shipped
ScaledObject's `keda-default` preset) over the run's arrivals, one second at a time,
with the run's own cold start and per-job compute as the replica's.

    surge cost demo-output/report.json --price-per-gpu-hour 4
    surge cost reports/loadgen-marketing-spike-20261126-070102/report.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from loadgen.run.profiles import Profile
from loadgen.sim import ColdStart, ServiceModel, run_simulation
from scaler.bill import DEFAULT_PRICE, Bill, Usage, bill_table, make_bill

__all__ = ["KEDA_ROW", "cost_command", "keda_default", "keda_default_row", "load_usage"]

console = Console()
err_console = Console(stderr=True)
KEDA = "keda-default"
KEDA_ROW = "KEDA defaults, same arrivals"


def load_usage(path: Path) -> Usage:
    """The `usage` of a demo or run report (or a bare `Usage`); `ValueError` says what is
    wrong."""
    try:
        doc: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if isinstance(doc, dict) and "usage" in doc:
        if doc["usage"] is None:
            raise ValueError(
                f"{path}: its run heard no worker's heartbeat, so its replicas are unknown "
                "and there is nothing to bill"
            )
        doc = doc["usage"]
    try:
        return Usage.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the top level"
        raise ValueError(f"{path} holds no run usage ({where}: {first['msg']})") from exc


def arrivals_profile(arrivals_s: list[float]) -> Profile:
    """The arrivals as a rate curve: jobs per second, one step per second."""
    start = math.floor(min(arrivals_s))
    counts = [0] * (math.floor(max(arrivals_s)) - start + 1)
    for t in arrivals_s:
        counts[math.floor(t) - start] += 1
    points: list[tuple[float, float]] = []
    for second, count in enumerate(counts):
        points += [(float(second), float(count)), (float(second + 1), float(count))]
    return Profile(name="run arrivals", points=points)


def keda_default(usage: Usage, bill: Bill) -> tuple[float, float] | None:
    """(GPU-seconds, cost) under KEDA's defaults for the run's arrivals, until it is back
    at zero; None without arrivals or compute to model a replica on."""
    if not usage.arrivals_s or usage.compute_s <= 0:
        return None
    per_job_s = usage.compute_s / len(usage.arrivals_s)
    report = run_simulation(
        arrivals_profile(usage.arrivals_s),
        policies=[KEDA],
        service=ServiceModel(batch_overhead_s=0.0, per_job_s=per_job_s),
        cold_start=ColdStart(node_s=0.0, image_s=0.0, model_s=usage.cold_start_s, warmup_s=0.0),
        poisson=False,
        price_per_gpu_hour=bill.price_per_gpu_hour,
    )
    [result] = report.results
    return result.gpu_seconds, result.cost


def keda_default_row(usage: Usage, bill: Bill) -> tuple[str, float, float] | None:
    """The bill's KEDA row (`surge.bill_comparisons` entry point: `surge demo` prints it
    without importing the load generator)."""
    keda = keda_default(usage, bill)
    return (KEDA_ROW, *keda) if keda else None


def cost_command(
    report: Annotated[Path, typer.Argument(help="A run's report.json (surge demo writes one).")],
    price_per_gpu_hour: Annotated[
        float, typer.Option(min=0.0, help="Dollars per GPU-hour.")
    ] = DEFAULT_PRICE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    start: Annotated[
        float | None,
        typer.Option("--from", help="Bill only from this second of the run (its clock)."),
    ] = None,
    end: Annotated[
        float | None, typer.Option("--to", help="... up to this second (default: its end).")
    ] = None,
) -> None:
    """GPU-seconds used, starting and idle, and the bill, beside a fixed fleet and KEDA's
    defaults for the same arrivals."""
    try:
        usage = load_usage(report)
        if start is not None or end is not None:
            usage = usage.within(start or 0.0, end if end is not None else math.inf)
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    bill = make_bill(usage, price_per_gpu_hour)
    keda = keda_default(usage, bill)
    if as_json:
        figures = bill.model_dump()
        figures |= {"keda_default_s": keda[0], "keda_default_cost": keda[1]} if keda else {}
        typer.echo(json.dumps(figures, indent=2))
        return
    console.print(bill_table(bill, {KEDA_ROW: keda} if keda else None))
