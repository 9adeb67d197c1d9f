"""KEDA's view of the function against the settings, the workload and the scaler.

Each check takes the documents of one rendered overlay and returns a list of problems
(empty when all is well); `tests/manifests/checks.py` runs them with the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from function.contract.settings import JOBS_STREAM, Priority, consumer_name
from tests.manifests import contract
from tests.manifests.kube import Doc, go_duration, name_of, override_of, workloads
from tests.manifests.lookup import (
    config_maps,
    find,
    worker_container,
    worker_settings,
    worker_workloads,
)

Docs = Sequence[Doc]


def scaled_object_specs(docs: Docs) -> list[tuple[str, Doc]]:
    """(where, ScaledObject) for standalone ones and Knative override annotations."""
    found = [(name_of(d), d) for d in find(docs, "ScaledObject", "keda.sh/v1alpha1")]
    for ksvc in find(docs, "Service", "serving.knative.dev/v1"):
        override = override_of(ksvc)
        if override is not None:
            found.append((f"{name_of(ksvc)} override", override))
    return found


def probe_budget_s(probe: Mapping[str, Any]) -> float:
    """How long a probe tolerates failure before it gives up."""
    return float(
        probe.get("initialDelaySeconds", 0)
        + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    )


def startup_budget_s(pod: Mapping[str, Any]) -> float:
    """The worker's cold-start allowance: its startup probe, else its readiness probe."""
    worker = worker_container(pod)
    probe = worker.get("startupProbe") or worker.get("readinessProbe") or {}
    return probe_budget_s(probe)


def check_scaling(docs: Docs) -> list[str]:
    """KEDA's view of the function agrees with the settings, the workload and the scaler."""
    errors = []
    settings = worker_settings(docs)
    expected_consumers = {consumer_name(settings.function, p) for p in Priority}
    auths = {d["metadata"]["name"]: d["spec"] for d in find(docs, "TriggerAuthentication")}
    maps = config_maps(docs)
    budgets = [startup_budget_s(pod) for _, pod in worker_workloads(docs)]
    specs = scaled_object_specs(docs)
    if len(specs) != 1:
        errors.append(f"want exactly one ScaledObject for the function, found {len(specs)}")
    for where, so in specs:
        spec = so.get("spec", {})
        if spec.get("minReplicaCount") != 0:
            errors.append(f"{where}: minReplicaCount must be 0 (scale from zero)")
        if not 0 < spec.get("pollingInterval", 30) <= 10:
            errors.append(f"{where}: pollingInterval should be short (<= 10 s)")
        if "cooldownPeriod" not in spec:
            errors.append(f"{where}: set cooldownPeriod explicitly")
        initial = spec.get("initialCooldownPeriod", 0)
        if any(initial < budget for budget in budgets):
            errors.append(
                f"{where}: initialCooldownPeriod {initial}s is shorter than the worker's"
                f" startup budget {max(budgets)}s: KEDA would stop the first pod while it warms"
            )
        advanced = spec.get("advanced")
        if advanced is not None and "horizontalPodAutoscalerConfig" not in advanced:
            # autoscaler-keda writes advanced.horizontalPodAutoscalerConfig.name without a nil check
            errors.append(f"{where}: `advanced` without `horizontalPodAutoscalerConfig`")
        scale_up = (
            (advanced or {})
            .get("horizontalPodAutoscalerConfig", {})
            .get("behavior", {})
            .get("scaleUp")
        )
        if not scale_up or scale_up.get("stabilizationWindowSeconds") != 0:
            errors.append(
                f"{where}: HPA scaleUp should react at once (stabilizationWindowSeconds 0)"
            )

        triggers = spec.get("triggers", [])
        jetstream = [t for t in triggers if t.get("type") == "nats-jetstream"]
        found = {t.get("metadata", {}).get("consumer") for t in jetstream}
        if found != expected_consumers:
            errors.append(f"{where}: nats-jetstream consumers {found}, want {expected_consumers}")
        for t in jetstream:
            meta = t.get("metadata", {})
            label = f"{where} trigger {t.get('name')}"
            if meta.get("stream") != JOBS_STREAM:
                errors.append(f"{label}: stream {meta.get('stream')!r}, want {JOBS_STREAM}")
            if meta.get("lagThreshold") != str(settings.max_batch):
                errors.append(
                    f"{label}: lagThreshold {meta.get('lagThreshold')!r} != SURGE_MAX_BATCH"
                    f" {settings.max_batch}"
                )
            params = set(meta)
            auth_name = (t.get("authenticationRef") or {}).get("name")
            if auth_name is not None:
                auth = auths.get(auth_name)
                if auth is None:
                    errors.append(
                        f"{label}: TriggerAuthentication {auth_name} is not in the manifests"
                    )
                    continue
                params |= {r["parameter"] for r in auth.get("secretTargetRef", [])}
                for ref in auth.get("configMapTargetRef", []):
                    params.add(ref["parameter"])
                    if ref["key"] not in maps.get(ref["name"], {}):
                        errors.append(f"{label}: ConfigMap {ref['name']} has no key {ref['key']}")
            missing = [p for p in contract.NATS_JETSTREAM_AUTH_PARAMS if p not in params]
            if missing:
                errors.append(f"{label}: nothing provides {missing}")
        pushes = [t for t in triggers if t.get("type") == "external-push"]
        if len(pushes) != 1:
            errors.append(f"{where}: want one external-push trigger (Surge's scaler)")
        for t in pushes:
            meta = t.get("metadata", {})
            errors += [
                f"{where}: {e}" for e in check_scaler_address(docs, meta.get("scalerAddress"))
            ]
            if meta.get("function") != settings.function:
                errors.append(f"{where}: external-push `function` != SURGE_FUNCTION")

    for so in find(docs, "ScaledObject", "keda.sh/v1alpha1"):
        target = so["spec"].get("scaleTargetRef", {})
        deployments = {d["metadata"]["name"] for d in find(docs, "Deployment", "apps/v1")}
        if (
            target.get("kind", "Deployment") != "Deployment"
            or target.get("name") not in deployments
        ):
            errors.append(f"{name_of(so)}: scaleTargetRef {target} is not a Deployment here")
    for ksvc in find(docs, "Service", "serving.knative.dev/v1"):
        errors += _check_knative_autoscaling(ksvc)
    return errors


def _check_knative_autoscaling(ksvc: Doc) -> list[str]:
    where = name_of(ksvc)
    annotations = ksvc["spec"]["template"].get("metadata", {}).get("annotations", {})
    errors = []
    want = {
        "autoscaling.knative.dev/class": contract.KNATIVE_HPA_CLASS,
        "autoscaling.knative.dev/min-scale": "0",
    }
    for key, value in want.items():
        if annotations.get(key) != value:
            errors.append(f"{where}: annotation {key}={annotations.get(key)!r}, want {value!r}")
    for key, value in annotations.items():
        if not isinstance(value, str):
            errors.append(f"{where}: annotation {key} must be a string, is {value!r}")
    override = override_of(ksvc)
    if override is None:
        return [*errors, f"{where}: no {contract.OVERRIDE_ANNOTATION}"]
    max_scale = annotations.get("autoscaling.knative.dev/max-scale")
    if max_scale is None:
        errors.append(f"{where}: set autoscaling.knative.dev/max-scale")
    elif override.get("spec", {}).get("maxReplicaCount", int(max_scale)) != int(max_scale):
        # autoscaler-keda replaces maxReplicaCount with max-scale: keep them equal
        errors.append(f"{where}: override maxReplicaCount != max-scale {max_scale}")
    budgets = [startup_budget_s(ksvc["spec"]["template"]["spec"])]
    deadline = annotations.get("serving.knative.dev/progress-deadline")
    if deadline is None or go_duration(deadline) < max(budgets):
        errors.append(f"{where}: serving.knative.dev/progress-deadline shorter than startup budget")
    return errors


_HOST = re.compile(r"^(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc(?:\.cluster\.local)?$")


def check_scaler_address(docs: Docs, address: str | None) -> list[str]:
    """`name.namespace.svc:port` names a Service here, whose port reaches the scaler's gRPC port."""
    if not address or ":" not in address:
        return [f"scalerAddress {address!r} is not host:port"]
    host, _, port_text = address.rpartition(":")
    match = _HOST.match(host)
    if match is None or not port_text.isdigit():
        return [f"scalerAddress {address!r} is not <service>.<namespace>.svc:<port>"]
    port = int(port_text)
    services = [
        s
        for s in find(docs, "Service", "v1")
        if s["metadata"]["name"] == match["svc"] and s["metadata"].get("namespace") == match["ns"]
    ]
    if not services:
        return [f"scalerAddress {address}: no Service {match['svc']} in namespace {match['ns']}"]
    (service,) = services
    ports = [p for p in service["spec"].get("ports", []) if p["port"] == port]
    if not ports:
        return [f"scalerAddress {address}: Service {match['svc']} has no port {port}"]
    target = ports[0].get("targetPort", port)
    selector = service["spec"].get("selector", {})
    for workload, pod in workloads(docs):
        labels = workload["spec"]["template"].get("metadata", {}).get("labels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for c in pod["containers"]:
            for p in c.get("ports", []):
                if target in (p.get("name"), p["containerPort"]):
                    if p["containerPort"] != contract.SCALER_GRPC_PORT:
                        return [f"scalerAddress {address}: reaches port {p['containerPort']}"]
                    if tuple(c.get("command", [])) != contract.SCALER_COMMAND:
                        return [
                            f"scalerAddress {address}: reaches {c.get('command')}, not the scaler"
                        ]
                    return []
    return [f"scalerAddress {address}: Service port {port} reaches no container port"]
