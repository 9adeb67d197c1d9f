"""The simulated policies' KEDA/HPA settings, read from the shipped ScaledObject.

    presets = default_policies()              # manifests/scaling/scaledobject.json
    presets = default_policies(load_scaledobject(Path("site.json")), shared={"max_replicas": 8})

The ScaledObject is the one place these numbers live: what it leaves out takes KEDA's
and the HPA's own defaults (`Autoscaler`'s). The presets differ only where they are
compared:

* `keda-default`: the `nats-jetstream` trigger with KEDA's and the HPA's defaults for
  everything a ScaledObject tunes (pollingInterval, lagThreshold,
  activationLagThreshold, behavior);
* `keda-tuned`: the shipped ScaledObject's tuning, its `nats-jetstream` triggers alone;
* `surge`: the shipped ScaledObject as is (those triggers plus Surge's `external-push`);
* `surge-prewarm`: `surge` with a pre-warm plan for the campaign.

Every other setting (`SHARED`) is the shipped one for all four.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.sim.params import Autoscaler, ScalePolicy, ScaleRules
from scaler.config import ScalerMetadata

__all__ = [
    "SCALEDOBJECT",
    "SHARED",
    "SHIPPED",
    "TUNING",
    "autoscaler_from",
    "default_policies",
    "load_scaledobject",
]

SHIPPED = "manifests/scaling/scaledobject.json"
SCALEDOBJECT = Path(__file__).resolve().parents[2] / SHIPPED
"""The ScaledObject `manifests/` ships (both overlays use it)."""

SHARED = (
    "cooldown_s",
    "min_replicas",
    "max_replicas",
    "hpa_sync_s",
    "tolerance",
    "push_latency_s",
)
"""Settings every preset takes from the shipped ScaledObject (or the command line)."""

TUNING = ("polling_interval_s", "lag_threshold", "activation_lag", "scale_up", "scale_down")
"""What `keda-tuned` takes from the ScaledObject and `keda-default` leaves at KEDA's."""


def load_scaledobject(path: Path | None = None) -> dict[str, Any]:
    """The ScaledObject at `path` (default: the shipped one) as a dict."""
    path = path or SCALEDOBJECT
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no ScaledObject at {path}: pass one with --scaledobject") from None
    if doc.get("kind") != "ScaledObject" or not isinstance(doc.get("spec"), dict):
        raise ValueError(f"{path} is not a KEDA ScaledObject")
    return doc


def _rules(doc: Mapping[str, Any] | None, default: ScaleRules) -> ScaleRules:
    """One direction of `behavior`; what it leaves out is the HPA's default."""
    if not doc:
        return default
    policies = tuple(
        ScalePolicy(kind=p["type"], value=p["value"], period_s=p["periodSeconds"])
        for p in doc.get("policies") or ()
    )
    return ScaleRules(
        window_s=doc.get("stabilizationWindowSeconds", default.window_s),
        select=doc.get("selectPolicy", default.select),
        policies=policies or default.policies,
    )


def autoscaler_from(doc: Mapping[str, Any]) -> Autoscaler:
    """KEDA/HPA settings of a ScaledObject; the simulator has one queue, so every
    `nats-jetstream` trigger must use the same thresholds."""
    try:
        return _autoscaler(doc["spec"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"a ScaledObject field is missing or malformed: {exc!r}") from None


def _autoscaler(spec: Mapping[str, Any]) -> Autoscaler:
    base = Autoscaler()
    triggers = spec.get("triggers") or []
    lags = [t.get("metadata") or {} for t in triggers if t.get("type") == "nats-jetstream"]
    pushes = [t.get("metadata") or {} for t in triggers if t.get("type") == "external-push"]
    thresholds = {
        (m.get("lagThreshold", str(base.lag_threshold)), m.get("activationLagThreshold", "0"))
        for m in lags
    }
    if len(thresholds) > 1 or len(pushes) > 1:
        raise ValueError("the simulator models one queue: one set of lag thresholds, one push")
    lag, activation = thresholds.pop() if thresholds else (base.lag_threshold, 0.0)
    behavior = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    behavior = behavior.get("behavior") or {}
    return Autoscaler.model_validate(
        {
            "polling_interval_s": spec.get("pollingInterval", base.polling_interval_s),
            "cooldown_s": spec.get("cooldownPeriod", base.cooldown_s),
            "min_replicas": spec.get("minReplicaCount", base.min_replicas),
            "max_replicas": spec.get("maxReplicaCount", base.max_replicas),
            "lag_trigger": bool(lags),
            "lag_threshold": float(lag),
            "activation_lag": float(activation),
            "push": ScalerMetadata.parse(pushes[0]) if pushes else None,
            "scale_up": _rules(behavior.get("scaleUp"), base.scale_up),
            "scale_down": _rules(behavior.get("scaleDown"), base.scale_down),
        }
    )


def _with(config: Autoscaler, update: Mapping[str, Any]) -> Autoscaler:
    """`config` with `update` applied and checked."""
    return Autoscaler.model_validate({**config.model_dump(), **update}) if update else config


def default_policies(
    doc: Mapping[str, Any] | None = None,
    *,
    shared: Mapping[str, Any] | None = None,
    tuned: Mapping[str, Any] | None = None,
    untuned: Mapping[str, Any] | None = None,
    drain_target_s: float | None = None,
) -> dict[str, Autoscaler]:
    """The four KEDA presets from `doc` (default: the shipped ScaledObject).

    `shared` overrides settings of all four, `tuned` those of `keda-tuned` and the Surge
    presets, `untuned` those of `keda-default`; `drain_target_s` is the push trigger's
    targetDrainSeconds.
    """
    shipped = autoscaler_from(doc if doc is not None else load_scaledobject())
    if shipped.push is None:
        raise ValueError("the ScaledObject has no external-push trigger (Surge's scaler)")
    if drain_target_s is not None:
        push = shipped.push.model_copy(update={"target_drain_s": drain_target_s})
        shipped = _with(shipped, {"push": ScalerMetadata.model_validate(push.model_dump())})
    common = {name: getattr(shipped, name) for name in SHARED} | dict(shared or {})
    tuned_config = _with(shipped, common | dict(tuned or {}))
    return {
        "keda-default": _with(Autoscaler(), common | dict(untuned or {})),
        "keda-tuned": _with(tuned_config, {"push": None, "lag_trigger": True}),
        "surge": tuned_config,
        "surge-prewarm": _with(tuned_config, {"prewarm": True}),
    }
