"""The scaling-policy simulator: replay a profile through KEDA + HPA + pods, on paper.

    report = run_simulation(build_profile("marketing-spike", rate=5, duration=7200))
    for line in report.assumptions(): print(line)

Pure Python, deterministic for a seed, one shared arrival trace for every policy.

params     inputs (service, cold start, KEDA/HPA settings) and outputs (results, report)
manifest   the presets, read from the shipped ScaledObject
engine     arrivals, the shared queue, the fleet, the tick loop
policies   KEDA + HPA with the lag and Surge's `scaler.policy.decide()`; fixed; oracle
hpa        the HPA's sync: metrics, stabilization windows, scale-up/down policies
report     the table and the PNG
cli        the `surge loadgen simulate` command
"""

from __future__ import annotations

from loadgen.run.profiles import Profile
from loadgen.sim.engine import Controller, make_trace, simulate_policy
from loadgen.sim.manifest import SCALEDOBJECT, SHIPPED, default_policies, load_scaledobject
from loadgen.sim.params import (
    Autoscaler,
    ColdStart,
    PolicyResult,
    ScalerView,
    ServiceModel,
    SimPoint,
    SimReport,
    ceil_div,
    split_settings,
)
from loadgen.sim.policies import WATCH_S, KedaHpa, Oracle, Static, campaign_window

__all__ = [
    "POLICIES",
    "SCALEDOBJECT",
    "SHIPPED",
    "Autoscaler",
    "ColdStart",
    "PolicyResult",
    "ServiceModel",
    "SimPoint",
    "SimReport",
    "default_policies",
    "load_scaledobject",
    "run_simulation",
]

POLICIES = ("keda-default", "keda-tuned", "surge", "surge-prewarm", "fixed", "oracle")


def run_simulation(
    profile: Profile,
    *,
    policies: list[str] | None = None,
    presets: dict[str, Autoscaler] | None = None,
    service: ServiceModel | None = None,
    cold_start: ColdStart | None = None,
    seed: int = 1,
    dt: float = 0.1,
    tail_s: float = 900.0,
    poisson: bool = True,
    price_per_gpu_hour: float = 1.0,
    fixed_replicas: int | None = None,
    phases: tuple[float, float] | None = None,
    scaler_lead_s: float | None = None,
    source: str | None = None,
) -> SimReport:
    """Simulate each policy over the same arrivals.

    `presets` default to `default_policies()` (the shipped ScaledObject; `source` names
    where they came from); `phases` pins the (poll, sync) offsets; `scaler_lead_s` is the
    cold start Surge's scaler works with (default: what heartbeats measure, process start
    to ready).
    """
    service = service or ServiceModel()
    cold = cold_start or ColdStart()
    if presets is None:
        presets, source = default_policies(), source or SHIPPED
    names = policies or list(POLICIES)
    unknown = [name for name in names if name not in {"fixed", "oracle", *presets}]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}: one of {', '.join(POLICIES)}")
    horizon = profile.duration + tail_s
    trace = make_trace(profile, horizon, dt, seed, poisson)
    fixed = fixed_replicas or max(ceil_div(profile.peak_rate, service.max_throughput), 1)
    baseline = ceil_div(profile.rate_at(0.0), service.max_throughput)
    lead = cold.process_s if scaler_lead_s is None else scaler_lead_s
    plan = campaign_window(profile.points)
    configs = {name: presets[name] for name in names if name in presets}
    _, own = split_settings(configs)
    results: list[PolicyResult] = []
    for name in names:
        controller: Controller
        count = baseline
        if name == "fixed":
            controller, count = Static(), fixed
            text = f"{fixed} replicas always on (sized for the peak rate)"
        elif name == "oracle":
            controller = Oracle(trace, service, cold)
            text = "knows all arrivals; each replica requested one cold start ahead, no cooldown"
        else:
            config = presets[name]
            controller = KedaHpa(
                config,
                trace,
                service,
                cold,
                seed=seed,
                lead_s=lead,
                windows=(plan,),
                phases=phases,
            )
            text = ", ".join(f"{k} {v}" for k, v in own[name].items()) or "as the others"
            if config.prewarm:
                text += (
                    f" ({plan.rate:g} jobs/s from t={plan.start:.0f}s to {plan.end:.0f}s;"
                    " decide() raises demand from L + margin before)"
                )
        results.append(
            simulate_policy(
                name,
                text,
                controller,
                trace,
                service,
                cold,
                price_per_gpu_hour=price_per_gpu_hour,
                initial_ready=count,
            )
        )
    return SimReport(
        profile=profile.name,
        profile_points=profile.points,
        seed=seed,
        arrivals="poisson" if poisson else "fluid (deterministic)",
        horizon_s=horizon,
        dt_s=dt,
        price_per_gpu_hour=price_per_gpu_hour,
        initial_replicas=baseline,
        service=service,
        cold_start=cold,
        scaledobject=source or "given presets",
        scaler=ScalerView(
            watch_s=WATCH_S,
            throughput=service.max_throughput,
            lead_s=lead,
            lead_source="heartbeats: process start to ready, model + warmup"
            if scaler_lead_s is None
            else "set",
        ),
        policies=configs,
        results=results,
    )
