"""Cross-checks between the rendered manifests, `function.contract.settings` and each other.

Each check takes the documents of one rendered overlay and returns a list of
problems (empty when all is well), so the tests can run it on the real rendering
and on a deliberately broken copy.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from function.contract.nats_auth import NATS_ENV_PREFIX, NatsAuth
from function.contract.settings import (
    ADVISORIES_STREAM,
    DEAD_STREAM,
    DEAD_SUBJECT_PREFIX,
    ENV_PREFIX,
    JOBS_STREAM,
    RESULTS_STREAM,
    RESULTS_SUBJECT_PREFIX,
    Priority,
    WorkerSettings,
    consumer_name,
    max_deliveries_subject,
    sweeper_name,
)
from function.transport.topology import job_filters, jobs_subjects
from scaler.config import ScalerSettings
from tests.manifests import contract
from tests.manifests.kube import Doc, containers, go_duration, name_of, override_of, workloads

Docs = Sequence[Doc]
SETTINGS_ENV = {ENV_PREFIX + field.upper() for field in WorkerSettings.model_fields}
SCALER_ENV_PREFIX = str(ScalerSettings.model_config.get("env_prefix"))
SCALER_ENV = {SCALER_ENV_PREFIX + field.upper() for field in ScalerSettings.model_fields}
# How the worker and the scaler authenticate to NATS (components/nats-auth sets some).
NATS_AUTH_ENV = {NATS_ENV_PREFIX + field.upper() for field in NatsAuth.model_fields}


# --- finding things ------------------------------------------------------------------


def find(docs: Docs, kind: str, api_version: str | None = None) -> list[Doc]:
    return [
        d
        for d in docs
        if d.get("kind") == kind and (api_version is None or d.get("apiVersion") == api_version)
    ]


def config_maps(docs: Docs) -> dict[str, Mapping[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in find(docs, "ConfigMap", "v1")}


def worker_workloads(docs: Docs) -> list[tuple[Doc, Doc]]:
    """(workload, pod spec) of the function itself (label component=worker)."""
    return [
        (doc, pod)
        for doc, pod in workloads(docs)
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
    ]


def worker_container(pod: Mapping[str, Any]) -> Doc:
    (found,) = [c for c in pod["containers"] if c["name"] == "worker"]
    container: Doc = found
    return container


def container_env(docs: Docs, container: Mapping[str, Any]) -> dict[str, str]:
    """A container's literal environment: envFrom ConfigMaps, then `env` values."""
    maps = config_maps(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            env.update(maps.get(ref["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly `values` as the SURGE_* environment, restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def settings_from_env(values: Mapping[str, str]) -> WorkerSettings:
    """WorkerSettings as a process with exactly this SURGE_* environment would see them."""
    with _environment({k: v for k, v in values.items() if k.startswith(ENV_PREFIX)}):
        return WorkerSettings()


def worker_settings(docs: Docs) -> WorkerSettings:
    """The settings the (first) worker container starts with."""
    _, pod = worker_workloads(docs)[0]
    return settings_from_env(container_env(docs, worker_container(pod)))


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


def termination_grace_s(workload: Mapping[str, Any], pod: Mapping[str, Any]) -> float:
    """Knative sets the pod's terminationGracePeriodSeconds to the revision's timeoutSeconds."""
    if workload["apiVersion"] == "serving.knative.dev/v1":
        return float(pod.get("timeoutSeconds", 300))
    return float(pod.get("terminationGracePeriodSeconds", 30))


def longest_batch_s(settings: WorkerSettings) -> float:
    return settings.max_batch * contract.CPU_SECONDS_PER_IMAGE * contract.BATCH_SAFETY_FACTOR


# --- checks ------------------------------------------------------------------------------


def check_env_names(docs: Docs) -> list[str]:
    """Every SURGE_* variable, and every key of an envFrom ConfigMap, is a WorkerSettings field
    (or, in the scaler's container, a ScalerSettings field; in both, a NatsAuth field)."""
    errors = []
    maps = config_maps(docs)
    for workload, pod in workloads(docs):
        for c in containers(pod):
            where = f"{name_of(workload)} container {c['name']}"
            scaler = tuple(c.get("command", [])) == contract.SCALER_COMMAND
            known = SETTINGS_ENV | NATS_AUTH_ENV | (SCALER_ENV if scaler else set())
            for var in c.get("env", []):
                if var["name"].startswith(ENV_PREFIX) and var["name"] not in known:
                    kinds = "WorkerSettings or ScalerSettings" if scaler else "WorkerSettings"
                    errors.append(f"{where}: {var['name']} is not a {kinds} or NatsAuth field")
            for source in c.get("envFrom", []):
                if source.get("prefix"):
                    errors.append(f"{where}: envFrom prefix {source['prefix']!r} renames settings")
                ref = source.get("configMapRef")
                if ref is None:
                    continue
                if ref["name"] not in maps:
                    errors.append(f"{where}: ConfigMap {ref['name']} is not in the manifests")
                    continue
                for key in maps[ref["name"]]:
                    if key not in SETTINGS_ENV:
                        field = f"ConfigMap {ref['name']} key {key}"
                        errors.append(f"{where}: {field} is not a WorkerSettings field")
    return errors


def check_settings_parse(docs: Docs) -> list[str]:
    """The worker's environment is valid WorkerSettings."""
    errors = []
    for workload, pod in worker_workloads(docs):
        for c in containers(pod):
            try:
                settings_from_env(container_env(docs, c))
            except ValidationError as error:
                errors.append(f"{name_of(workload)} container {c['name']}: {error}")
    return errors


def check_jetstream(docs: Docs) -> list[str]:
    """NACK streams and consumers carry the settings module's names and the worker's settings."""
    errors = []
    settings = worker_settings(docs)
    streams = {d["spec"].get("name"): d["spec"] for d in find(docs, "Stream")}
    want_subjects = {
        JOBS_STREAM: jobs_subjects(),
        RESULTS_STREAM: [f"{RESULTS_SUBJECT_PREFIX}.>"],
        DEAD_STREAM: [f"{DEAD_SUBJECT_PREFIX}.>"],
        ADVISORIES_STREAM: [max_deliveries_subject("*")],
    }
    if set(streams) != set(want_subjects):
        errors.append(f"streams are {sorted(streams)}, want {sorted(want_subjects)}")
    for name, subjects in want_subjects.items():
        spec = streams.get(name)
        if spec is None:
            continue
        if spec.get("subjects") != subjects:
            errors.append(f"stream {name}: subjects {spec.get('subjects')}, want {subjects}")
        if spec.get("storage") != "file":
            errors.append(f"stream {name}: storage {spec.get('storage')!r} (NACK default: memory)")
    jobs, results = streams.get(JOBS_STREAM, {}), streams.get(RESULTS_STREAM, {})
    if jobs.get("retention") != "workqueue":
        errors.append(f"stream {JOBS_STREAM}: retention {jobs.get('retention')!r}, want workqueue")
    if (
        jobs.get("duplicateWindow")
        and go_duration(jobs["duplicateWindow"]) != settings.dedupe_window_s
    ):
        errors.append(f"stream {JOBS_STREAM}: duplicateWindow != SURGE_DEDUPE_WINDOW_S")
    if results.get("maxMsgsPerSubject") != 1:
        errors.append(f"stream {RESULTS_STREAM}: maxMsgsPerSubject must be 1")
    if results.get("allowDirect") is not True:
        errors.append(f"stream {RESULTS_STREAM}: allowDirect must be true")
    if go_duration(results.get("maxAge") or "0s") != settings.results_max_age_s:
        errors.append(f"stream {RESULTS_STREAM}: maxAge != SURGE_RESULTS_MAX_AGE_S")
    if go_duration(jobs.get("maxAge") or "0s") != settings.jobs_max_age_s:
        errors.append(f"stream {JOBS_STREAM}: maxAge != SURGE_JOBS_MAX_AGE_S")

    consumers = {d["spec"].get("durableName"): d["spec"] for d in find(docs, "Consumer")}
    want = {consumer_name(settings.function, p): p for p in Priority}
    expected = {*want, sweeper_name(settings.function)}
    if set(consumers) != expected:
        errors.append(f"consumers are {sorted(consumers)}, want {sorted(expected)}")
    for durable, priority in want.items():
        spec = consumers.get(durable)
        if spec is None:
            continue
        expected: dict[str, Any] = {
            "streamName": JOBS_STREAM,
            "filterSubjects": job_filters(settings.function, priority),
            "ackPolicy": "explicit",
            "maxDeliver": settings.max_deliver,
            "maxAckPending": settings.max_ack_pending,
        }
        for field, value in expected.items():
            if spec.get(field) != value:
                errors.append(f"consumer {durable}: {field} {spec.get(field)!r}, want {value!r}")
        if spec.get("deliverSubject"):
            errors.append(f"consumer {durable}: must be a pull consumer (no deliverSubject)")
        if go_duration(spec.get("ackWait", "0s")) != settings.ack_wait_s:
            errors.append(f"consumer {durable}: ackWait {spec.get('ackWait')} != SURGE_ACK_WAIT_S")
    return errors


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


def check_probes(docs: Docs) -> list[str]:
    """The worker's probes hit the paths and port the function serves."""
    errors = []
    want = {
        "startupProbe": {contract.READINESS_PATH, contract.LIVENESS_PATH},
        "readinessProbe": {contract.READINESS_PATH},
        "livenessProbe": {contract.LIVENESS_PATH},
    }
    for workload, pod in worker_workloads(docs):
        worker = worker_container(pod)
        where = f"{name_of(workload)} worker"
        ports = {p.get("name"): p["containerPort"] for p in worker.get("ports", [])}
        if contract.HTTP_PORT not in ports.values():
            errors.append(f"{where}: does not expose port {contract.HTTP_PORT}")
        settings = settings_from_env(container_env(docs, worker))
        if settings.http_port != contract.HTTP_PORT:
            errors.append(f"{where}: SURGE_HTTP_PORT {settings.http_port} != {contract.HTTP_PORT}")
        for field, paths in want.items():
            probe = worker.get(field)
            if probe is None:
                errors.append(f"{where}: no {field}")
                continue
            http = probe.get("httpGet")
            if http is None or http.get("path") not in paths:
                errors.append(f"{where}: {field} must GET one of {sorted(paths)}")
                continue
            port = ports.get(http.get("port"), http.get("port"))
            if port != contract.HTTP_PORT:
                errors.append(
                    f"{where}: {field} port {http.get('port')!r} is not {contract.HTTP_PORT}"
                )
    return errors


def check_shutdown(docs: Docs) -> list[str]:
    """termination grace >= ack wait (settings == NACK) >= drain timeout >= longest batch."""
    errors = []
    for workload, pod in worker_workloads(docs):
        settings = settings_from_env(container_env(docs, worker_container(pod)))
        where = name_of(workload)
        grace = termination_grace_s(workload, pod)
        batch = longest_batch_s(settings)
        if grace < settings.ack_wait_s:
            errors.append(
                f"{where}: termination grace {grace}s < SURGE_ACK_WAIT_S {settings.ack_wait_s}"
            )
        if grace < settings.drain_timeout_s:
            errors.append(f"{where}: termination grace {grace}s < SURGE_DRAIN_TIMEOUT_S")
        if settings.ack_wait_s < batch:
            errors.append(
                f"{where}: SURGE_ACK_WAIT_S {settings.ack_wait_s} < longest batch {batch}s"
            )
        if settings.drain_timeout_s < batch:
            errors.append(f"{where}: SURGE_DRAIN_TIMEOUT_S < longest batch {batch}s")
    return errors


def check_security(docs: Docs) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, in every container."""
    errors = []
    for workload, pod in workloads(docs):
        pod_ctx = pod.get("securityContext", {})
        for c in containers(pod):
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            where = f"{name_of(workload)} container {c['name']}"
            if ctx.get("runAsNonRoot") is not True:
                errors.append(f"{where}: runAsNonRoot must be true")
            if ctx.get("runAsUser", 1) == 0:
                errors.append(f"{where}: runs as root")
            if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem must be true")
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation must be false")
    return errors


def check_model_cache(docs: Docs) -> list[str]:
    """SURGE_MODEL_DIR is a mounted volume in the worker, and the init step fills that directory."""
    errors = []
    for workload, pod in worker_workloads(docs):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        where = name_of(workload)
        for c in containers(pod):
            model_dir = str(settings_from_env(container_env(docs, c)).model_dir)
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            if model_dir not in mounts or mounts[model_dir] not in volumes:
                errors.append(f"{where} container {c['name']}: {model_dir} is not a mounted volume")
            if tuple(c.get("command", [])[:3]) == contract.MODELS_COMMAND:
                args = c["command"]
                if "--dir" not in args or args[args.index("--dir") + 1] != model_dir:
                    errors.append(f"{where} {c['name']}: models fetch --dir != {model_dir}")
        if not any(
            tuple(c.get("command", [])[:3]) == contract.MODELS_COMMAND
            for c in pod.get("initContainers", [])
        ):
            errors.append(f"{where}: no init step runs `surge models fetch`")
        if tuple(worker_container(pod).get("command", [])) != contract.WORKER_COMMAND:
            errors.append(f"{where}: the worker container must run `surge worker`")
    return errors


def check_gpu(docs: Docs, *, gpu: bool) -> list[str]:
    """GPU overlays ask for a GPU and tolerate GPU nodes; cpu variants mention no GPU at all."""
    errors = []
    for workload, pod in worker_workloads(docs):
        worker = worker_container(pod)
        where = name_of(workload)
        limit = worker.get("resources", {}).get("limits", {}).get(contract.GPU_RESOURCE)
        tolerates = any(t.get("key") == contract.GPU_RESOURCE for t in pod.get("tolerations", []))
        providers = settings_from_env(container_env(docs, worker)).providers
        if gpu:
            if limit is None or int(limit) < 1:
                errors.append(f"{where}: no {contract.GPU_RESOURCE} limit")
            if not pod.get("nodeSelector"):
                errors.append(f"{where}: no nodeSelector for GPU nodes")
            if not tolerates:
                errors.append(f"{where}: does not tolerate the {contract.GPU_RESOURCE} taint")
            if "cuda" not in providers:
                errors.append(f"{where}: SURGE_PROVIDERS {providers} lacks cuda")
        else:
            if limit is not None or tolerates or pod.get("nodeSelector"):
                errors.append(f"{where}: the cpu variant still asks for GPU nodes")
            if providers != ["cpu"]:
                errors.append(f"{where}: the cpu variant's SURGE_PROVIDERS is {providers}")
    return errors


def check_images(docs: Docs) -> list[str]:
    """One image for every Surge container, and never the bare placeholder."""
    images = {c["image"] for _, pod in workloads(docs) for c in containers(pod)}
    errors = []
    if contract.IMAGE_PLACEHOLDER in images or any(":" not in i and "@" not in i for i in images):
        errors.append(f"images {sorted(images)}: the placeholder was not replaced (manifests/site)")
    if len(images) != 1:
        errors.append(f"want one image for worker, init step and scaler, found {sorted(images)}")
    return errors


_SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|private|api_?key", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@$]+:[^/\s@$]+@", re.IGNORECASE)


def check_no_secrets(docs: Docs) -> list[str]:
    """No Secret objects, no secret-looking env literals, no credentials in URLs."""
    errors = [
        f"{name_of(d)}: secrets are created with kubectl, not kept here"
        for d in find(docs, "Secret")
    ]
    for workload, pod in workloads(docs):
        for c in containers(pod):
            for var in c.get("env", []):
                if "value" in var and _SECRET_NAME.search(var["name"]):
                    errors.append(f"{name_of(workload)}: env {var['name']} is a literal")

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")
        elif isinstance(node, str) and _URL_CREDENTIALS.search(node):
            errors.append(f"{where}: credentials in a URL")

    for doc in docs:
        walk(doc, name_of(doc))
    return errors


def check_namespaces(docs: Docs) -> list[str]:
    return [
        f"{name_of(d)}: namespace {d['metadata'].get('namespace')!r}, want {contract.NAMESPACE}"
        for d in docs
        if d.get("kind") != "Namespace" and d["metadata"].get("namespace") != contract.NAMESPACE
    ]


ALL_CHECKS = (
    check_env_names,
    check_settings_parse,
    check_jetstream,
    check_scaling,
    check_probes,
    check_shutdown,
    check_security,
    check_model_cache,
    check_images,
    check_no_secrets,
    check_namespaces,
)
