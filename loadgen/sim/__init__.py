"""The scaling-policy simulator: replay a profile through KEDA + HPA + pods, on paper.

    report = run_simulation(build_profile("marketing-spike", rate=5, duration=7200))
    for line in report.assumptions(): print(line)

Pure Python, deterministic for a seed, one shared arrival trace for every policy.
"""

from __future__ import annotations

from loadgen.profiles import Profile
from loadgen.sim.engine import Controller, make_trace, simulate_policy
from loadgen.sim.params import (
    Autoscaler,
    ColdStart,
    PolicyResult,
    ServiceModel,
    SimPoint,
    SimReport,
    ceil_div,
)
from loadgen.sim.policies import KedaHpa, Oracle, Static, campaign_plan, surge_demand

__all__ = [
    "POLICIES",
    "Autoscaler",
    "ColdStart",
    "PolicyResult",
    "ServiceModel",
    "SimPoint",
    "SimReport",
    "default_policies",
    "run_simulation",
    "surge_demand",
]

POLICIES = ("keda-default", "keda-tuned", "surge", "surge-prewarm", "fixed", "oracle")


def default_policies(
    *, tuned_polling_s: float = 5.0, max_replicas: int = 100, lag_threshold: float = 10.0
) -> dict[str, Autoscaler]:
    """The autoscaler presets: KEDA/HPA defaults, a tuned poll, Surge's push + demand."""
    keda = Autoscaler(max_replicas=max_replicas, lag_threshold=lag_threshold)
    surge = Autoscaler(
        polling_interval_s=tuned_polling_s,
        cooldown_s=60.0,
        lag_threshold=lag_threshold,
        up_pods=10,
        up_percent=100.0,
        down_window_s=60.0,
        down_percent=50.0,
        max_replicas=max_replicas,
        push=True,
        demand=True,
    )
    return {
        "keda-default": keda,
        "keda-tuned": keda.model_copy(update={"polling_interval_s": tuned_polling_s}),
        "surge": surge,
        "surge-prewarm": surge.model_copy(update={"prewarm": True}),
    }


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
) -> SimReport:
    """Simulate each policy over the same arrivals; `phases` pins (poll, sync) offsets."""
    service = service or ServiceModel()
    cold = cold_start or ColdStart()
    presets = presets or default_policies()
    names = policies or list(POLICIES)
    horizon = profile.duration + tail_s
    trace = make_trace(profile, horizon, dt, seed, poisson)
    fixed = fixed_replicas or max(ceil_div(profile.peak_rate, service.max_throughput), 1)
    baseline = ceil_div(profile.rate_at(0.0), service.max_throughput)
    configs: dict[str, Autoscaler] = {}
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
        elif name in presets:
            config = presets[name]
            plan = campaign_plan(profile.points, service, cold, config) if config.prewarm else None
            controller = KedaHpa(config, trace, service, seed=seed, campaign=plan, phases=phases)
            text = config.describe()
            configs[name] = config
            if plan is not None:
                text += f" ({plan[2]} replicas from t={plan[0]:.0f}s to {plan[1]:.0f}s)"
        else:
            raise ValueError(f"unknown policy {name!r}: one of {', '.join(POLICIES)}")
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
        policies=configs,
        results=results,
    )
