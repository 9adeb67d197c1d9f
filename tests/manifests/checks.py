"""Cross-checks between the rendered manifests, `function.contract.settings` and each other.

Each check takes the documents of one rendered overlay and returns a list of
problems (empty when all is well), so the tests can run it on the real rendering
and on a deliberately broken copy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from function.contract.nats_auth import NATS_ENV_PREFIX, NatsAuth
from function.contract.settings import ENV_PREFIX, WorkerSettings
from scaler.config import ScalerSettings
from tests.manifests import contract
from tests.manifests.jetstream_checks import check_jetstream
from tests.manifests.kube import Doc, containers, name_of, workloads
from tests.manifests.lookup import config_maps as config_maps
from tests.manifests.lookup import container_env as container_env
from tests.manifests.lookup import find as find
from tests.manifests.lookup import settings_from_env as settings_from_env
from tests.manifests.lookup import worker_container as worker_container
from tests.manifests.lookup import worker_settings as worker_settings
from tests.manifests.lookup import worker_workloads as worker_workloads
from tests.manifests.scaling_checks import check_scaler_address as check_scaler_address
from tests.manifests.scaling_checks import check_scaling
from tests.manifests.scaling_checks import scaled_object_specs as scaled_object_specs

Docs = Sequence[Doc]
SETTINGS_ENV = {ENV_PREFIX + field.upper() for field in WorkerSettings.model_fields}
SCALER_ENV_PREFIX = str(ScalerSettings.model_config.get("env_prefix"))
SCALER_ENV = {SCALER_ENV_PREFIX + field.upper() for field in ScalerSettings.model_fields}
# How the worker and the scaler authenticate to NATS (components/nats-auth sets some).
NATS_AUTH_ENV = {NATS_ENV_PREFIX + field.upper() for field in NatsAuth.model_fields}


# --- more to find ---------------------------------------------------------------------


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
