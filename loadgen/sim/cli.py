"""`surge loadgen simulate`: replay a profile through the scaling-policy simulator.

surge loadgen simulate --profile marketing-spike --rate 10 --factor 50 --duration 7200
surge loadgen simulate --profile traffic.csv --bench reports/bench-20250101.json --out sim/
surge loadgen simulate --scaledobject my-site.json --cooldown 120   # every policy's cooldown

KEDA/HPA settings come from manifests/scaling/scaledobject.json (or --scaledobject);
--cooldown, --max-replicas and --hpa-sync apply to every policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from loadgen.run.profiles import profile_from_options

if TYPE_CHECKING:
    from loadgen.sim import ServiceModel

__all__ = ["POLICY_NAMES", "simulate"]

POLICY_NAMES = ("keda-default", "keda-tuned", "surge", "surge-prewarm", "fixed", "oracle")

console = Console()


def _service(
    bench: Path | None, max_batch: int | None, overhead_ms: float | None, per_job_ms: float | None
) -> ServiceModel:
    from loadgen.sim import ServiceModel

    base = ServiceModel.from_bench(json.loads(bench.read_text())) if bench else ServiceModel()
    updates: dict[str, float | int] = {}
    if max_batch is not None:
        updates["max_batch"] = max_batch
    if overhead_ms is not None:
        updates["batch_overhead_s"] = overhead_ms / 1000
    if per_job_ms is not None:
        updates["per_job_s"] = per_job_ms / 1000
    return ServiceModel.model_validate({**base.model_dump(), **updates})


def simulate(
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="A built-in profile or a CSV of time,rate.")
    ] = "marketing-spike",
    policy: Annotated[
        list[str] | None,
        typer.Option(help=f"Policies to compare (repeat); default all: {', '.join(POLICY_NAMES)}."),
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Base rate, jobs/s (x50 at the peak: 500 fits maxReplicaCount 4).")
    ] = 10.0,
    factor: Annotated[float | None, typer.Option(help="Peak / base rate.")] = 50.0,
    duration: Annotated[float | None, typer.Option(help="Profile length, s.")] = 7200.0,
    rate_scale: Annotated[float, typer.Option(help="Multiply every rate by this.")] = 1.0,
    bench: Annotated[
        Path | None,
        typer.Option(exists=True, help="A `make bench` JSON: per-replica throughput from it."),
    ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Replica batch size (default 8).")] = None,
    batch_overhead_ms: Annotated[
        float | None, typer.Option(help="Fixed time per batch, ms (default 15).")
    ] = None,
    per_job_ms: Annotated[
        float | None, typer.Option(help="Extra time per job in a batch, ms (default 5).")
    ] = None,
    node_s: Annotated[float, typer.Option(help="Cold start: GPU node provisioning, s.")] = 60.0,
    image_s: Annotated[float, typer.Option(help="Cold start: image pull, s.")] = 25.0,
    model_s: Annotated[float, typer.Option(help="Cold start: model load, s.")] = 5.0,
    warmup_s: Annotated[float, typer.Option(help="Cold start: warmup inference, s.")] = 3.0,
    scaledobject: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="The ScaledObject (JSON) to read KEDA/HPA settings from "
            "(default: manifests/scaling/scaledobject.json).",
        ),
    ] = None,
    polling_interval: Annotated[
        float, typer.Option(help="pollingInterval of keda-default (KEDA's default), s.")
    ] = 30.0,
    tuned_polling_interval: Annotated[
        float | None,
        typer.Option(help="pollingInterval of keda-tuned and surge* (default: ScaledObject's)."),
    ] = None,
    lag_threshold: Annotated[
        float | None,
        typer.Option(help="lagThreshold of keda-tuned and surge* (default: ScaledObject's)."),
    ] = None,
    cooldown: Annotated[
        float | None,
        typer.Option(help="cooldownPeriod of every policy, s (default: ScaledObject's)."),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(help="maxReplicaCount of every policy (default: ScaledObject's)."),
    ] = None,
    hpa_sync: Annotated[
        float | None, typer.Option(help="HPA sync period of every policy, s (default: 15).")
    ] = None,
    drain_target: Annotated[
        float | None,
        typer.Option(help="targetDrainSeconds of the push trigger (default: ScaledObject's)."),
    ] = None,
    scaler_lead: Annotated[
        float | None,
        typer.Option(
            help="Cold start Surge's scaler works with, s "
            "(default: what heartbeats measure: model + warmup)."
        ),
    ] = None,
    fixed_replicas: Annotated[
        int | None, typer.Option(help="Size of the fixed fleet (default: enough for the peak).")
    ] = None,
    price: Annotated[float, typer.Option(help="Price of one GPU-hour.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the arrival draw.")] = 1,
    dt: Annotated[float, typer.Option(help="Simulation tick, s.")] = 0.1,
    tail: Annotated[float, typer.Option(help="Simulated time after the profile ends, s.")] = 900.0,
    fluid: Annotated[
        bool, typer.Option(help="Deterministic fluid arrivals (rate x tick) instead of Poisson.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write simulation.json and .png here.")] = None,
) -> None:
    """Compare scaling policies on a profile at cluster scale (on paper)."""
    from loadgen.sim import (
        SHIPPED,
        ColdStart,
        default_policies,
        load_scaledobject,
        run_simulation,
    )
    from loadgen.sim.report import policy_table, write_simulation

    try:
        shape = profile_from_options(profile, rate, factor, duration, rate_scale)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc
    shared = {"cooldown_s": cooldown, "max_replicas": max_replicas, "hpa_sync_s": hpa_sync}
    tuned = {"polling_interval_s": tuned_polling_interval, "lag_threshold": lag_threshold}
    try:
        presets = default_policies(
            load_scaledobject(scaledobject),
            shared={k: v for k, v in shared.items() if v is not None},
            tuned={k: v for k, v in tuned.items() if v is not None},
            untuned={"polling_interval_s": polling_interval},
            drain_target_s=drain_target,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    started = time.perf_counter()
    try:
        report = run_simulation(
            shape,
            policies=policy,
            presets=presets,
            service=_service(bench, max_batch, batch_overhead_ms, per_job_ms),
            cold_start=ColdStart(
                node_s=node_s, image_s=image_s, model_s=model_s, warmup_s=warmup_s
            ),
            seed=seed,
            dt=dt,
            tail_s=tail,
            poisson=not fluid,
            price_per_gpu_hour=price,
            fixed_replicas=fixed_replicas,
            scaler_lead_s=scaler_lead,
            source=str(scaledobject) if scaledobject else SHIPPED,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print("[bold]assumptions[/]")
    for line in report.assumptions():
        console.print(f"  {line}")
    console.print(policy_table(report))
    console.print(f"simulated in {time.perf_counter() - started:.1f} s")
    if out is not None:
        files = write_simulation(report, out)
        console.print(f"wrote {files['json']} and {files['png']}")
