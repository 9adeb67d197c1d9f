"""Mutual TLS between KEDA and Surge's scaler, as the rendered manifests set it up.

The scaler's container reads its certificate, key and client CA (`SURGE_SCALER_TLS_*`)
from a Secret mounted read-only; the `external-push` trigger names a
TriggerAuthentication that gives KEDA `caCert`, `tlsClientCert` and `tlsClientKey` from
another Secret. Each check returns a list of problems (empty when all is well).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from scaler.config import ScalerSettings
from tests.manifests import contract
from tests.manifests.checks import SCALER_ENV_PREFIX, find, scaled_object_specs
from tests.manifests.kube import Doc, name_of, workloads

Docs = Sequence[Doc]
TLS_FIELDS = ("tls_cert", "tls_key", "tls_client_ca")
DEFAULT_SECRET_MODE = 0o644  # Kubernetes' default for a secret volume's files


def scaler_pods(docs: Docs) -> list[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container that runs `surge scaler serve`."""
    return [
        (workload, pod, c)
        for workload, pod in workloads(docs)
        for c in pod.get("containers", [])
        if tuple(c.get("command", [])) == contract.SCALER_COMMAND
    ]


def tls_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal `SURGE_SCALER_TLS_*` values, by ScalerSettings field."""
    literal = {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    names = {field: SCALER_ENV_PREFIX + field.upper() for field in TLS_FIELDS}
    return {field: literal[name] for field, name in names.items() if name in literal}


def secret_mount(pod: Mapping[str, Any], container: Mapping[str, Any], path: str) -> list[str]:
    """Problems with how `path` reaches the container: a read-only, readable Secret file."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        key = posixpath.relpath(path, mount["mountPath"])
        if key.startswith(".."):
            continue
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            return [f"{path}: volume {mount['name']} is not a Secret"]
        errors = []
        if mount.get("readOnly") is not True:
            errors.append(f"{path}: mount {mount['name']} is not readOnly")
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        if items and key not in items:
            errors.append(f"{path}: Secret {secret.get('secretName')} items do not include {key}")
        if secret.get("optional") is True:
            errors.append(f"{path}: Secret {secret.get('secretName')} is optional")
        return errors + _readable(pod, secret, path)
    return [f"{path}: not under any volume mount of the container"]


def _readable(pod: Mapping[str, Any], secret: Mapping[str, Any], path: str) -> list[str]:
    """The non-root user reads the file: world-readable, or group-readable with an fsGroup."""
    mode = secret.get("defaultMode", DEFAULT_SECRET_MODE)
    if mode & 0o004 or (mode & 0o040 and "fsGroup" in pod.get("securityContext", {})):
        return []
    return [f"{path}: mode {mode:#o} and no fsGroup: the container's user cannot read it"]


def check_scaler_serves_mutual_tls(docs: Docs) -> list[str]:
    """The scaler container gets a certificate, key and client CA from a mounted Secret."""
    pods = scaler_pods(docs)
    if len(pods) != 1:
        return [f"want one scaler container, found {len(pods)}"]
    ((workload, pod, container),) = pods
    where = f"{name_of(workload)} container {container['name']}"
    env = tls_env(container)
    missing = [SCALER_ENV_PREFIX + f.upper() for f in TLS_FIELDS if f not in env]
    if missing:
        return [f"{where}: {missing} unset: the scaler would not serve mutual TLS"]
    errors = [f"{where}: {e}" for path in env.values() for e in secret_mount(pod, container, path)]
    settings = ScalerSettings.model_validate(env)  # as the process would (files not read)
    if None in (settings.tls_cert, settings.tls_key, settings.tls_client_ca):
        errors.append(f"{where}: ScalerSettings did not take the TLS paths")
    return errors


def server_secrets(docs: Docs) -> set[str]:
    """Names of the Secrets mounted into the scaler container."""
    names = set()
    for _, pod, container in scaler_pods(docs):
        mounted = {m["name"] for m in container.get("volumeMounts", [])}
        for volume in pod.get("volumes", []):
            if volume["name"] in mounted and "secret" in volume:
                names.add(volume["secret"].get("secretName"))
    return names


def check_keda_uses_tls(docs: Docs) -> list[str]:
    """KEDA's external-push trigger gets its CA and client certificate from a Secret."""
    errors = []
    auths = {d["metadata"]["name"]: d["spec"] for d in find(docs, "TriggerAuthentication")}
    for where, so in scaled_object_specs(docs):
        for trigger in so.get("spec", {}).get("triggers", []):
            if trigger.get("type") == "external-push":
                label = f"{where} trigger {trigger.get('name')}"
                errors += [f"{label}: {e}" for e in _trigger_tls(docs, trigger, auths)]
    return errors


def _trigger_tls(docs: Docs, trigger: Mapping[str, Any], auths: Mapping[str, Doc]) -> list[str]:
    metadata = trigger.get("metadata", {})
    errors = [
        f"metadata {key}: KEDA reads it only from a TriggerAuthentication"
        for key in contract.KEDA_TLS_PARAMS
        if key in metadata
    ]
    if str(metadata.get("unsafeSsl", "false")).lower() in {"1", "t", "true"}:
        errors.append("unsafeSsl skips verifying the scaler's certificate")
    ref = trigger.get("authenticationRef") or {}
    if ref.get("kind", "TriggerAuthentication") != "TriggerAuthentication":
        return [*errors, f"authenticationRef kind {ref.get('kind')!r} is not in the manifests"]
    auth = auths.get(ref.get("name", ""))
    if auth is None:
        return [*errors, f"no TriggerAuthentication {ref.get('name')!r} for TLS"]
    refs = {r["parameter"]: r for r in auth.get("secretTargetRef", [])}
    missing = [p for p in contract.KEDA_TLS_PARAMS if p not in refs]
    if missing:
        errors.append(f"TriggerAuthentication {ref['name']} does not give {missing}")
    key_ref = refs.get("tlsClientKey")
    if key_ref is not None and key_ref["name"] in server_secrets(docs):
        errors.append(f"KEDA's client key comes from the scaler's own Secret {key_ref['name']}")
    return errors
