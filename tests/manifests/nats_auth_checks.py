"""Surge on a secured NATS (components/nats-auth), as the rendered manifests set it up.

With the component, every container that connects to NATS (the worker, `surge worker`,
and the scaler, `surge scaler serve`) reads a credentials file, the server's CA and its
own certificate and key (`SURGE_NATS_*`, function/contract/nats_auth.py) from the Secret
`surge-nats-client`, mounted read-only and not optional, and dials `tls://`. Without
it, none of that is there: an open NATS keeps working. No rendering ever holds a secret
value. Each check returns a list of problems (empty when all is well).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from function.contract.nats_auth import NATS_ENV_PREFIX, NatsAuth
from tests.manifests import contract
from tests.manifests.checks import NATS_AUTH_ENV, container_env, find
from tests.manifests.kube import Doc, name_of, workloads
from tests.manifests.tls_checks import secret_mount

Docs = Sequence[Doc]

CLIENT_SECRET: Final = "surge-nats-client"
# What components/nats-auth sets: each variable names this file of the Secret.
SECURE_ENV: Final = {
    "SURGE_NATS_CREDS": "user.creds",
    "SURGE_NATS_TLS_CA": "ca.crt",
    "SURGE_NATS_TLS_CERT": "tls.crt",
    "SURGE_NATS_TLS_KEY": "tls.key",
}
NATS_CLIENT_COMMANDS: Final = frozenset({contract.WORKER_COMMAND, contract.SCALER_COMMAND})

SECRET_VALUES: Final = {
    "PEM block": re.compile(r"-----BEGIN [A-Z0-9 ]+-----"),
    "NATS credentials": re.compile(r"-----BEGIN NATS [A-Z ]+-----"),
    "nkey seed": re.compile(r"\bS[UAON][A-Z2-7]{56}\b"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
}


def nats_clients(docs: Docs) -> list[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every container that connects to NATS."""
    return [
        (workload, pod, c)
        for workload, pod in workloads(docs)
        for c in pod.get("containers", [])
        if tuple(c.get("command", [])) in NATS_CLIENT_COMMANDS
    ]


def auth_env(container: Mapping[str, Any]) -> dict[str, str | None]:
    """The container's NatsAuth variables: a literal value, or None when from a reference."""
    return {
        v["name"]: v.get("value") for v in container.get("env", []) if v["name"] in NATS_AUTH_ENV
    }


def client_secret_volumes(pod: Mapping[str, Any]) -> set[str]:
    return {
        v["name"]
        for v in pod.get("volumes", [])
        if v.get("secret", {}).get("secretName") == CLIENT_SECRET
    }


def check_nats_auth(docs: Docs, *, secure: bool) -> list[str]:
    """The worker and the scaler authenticate from the Secret when `secure`, else not at all."""
    clients = nats_clients(docs)
    found = {tuple(c["command"]) for _, _, c in clients}
    errors = []
    if found != NATS_CLIENT_COMMANDS:
        errors.append(f"want the worker and the scaler containers, found {sorted(found)}")
    for workload, pod, container in clients:
        where = f"{name_of(workload)} container {container['name']}"
        url = container_env(docs, container).get("SURGE_NATS_URL", "")
        check = _secured if secure else _open
        errors += [f"{where}: {e}" for e in check(pod, container, url)]
    for workload, pod in workloads(docs):
        for init in pod.get("initContainers", []):
            mounted = {m["name"] for m in init.get("volumeMounts", [])}
            if auth_env(init) or mounted & client_secret_volumes(pod):
                errors.append(
                    f"{name_of(workload)} init container {init['name']}: does not connect to"
                    f" NATS and must not get its credentials"
                )
    return errors


def _secured(pod: Mapping[str, Any], container: Mapping[str, Any], url: str) -> list[str]:
    env = auth_env(container)
    missing = [name for name in SECURE_ENV if env.get(name) is None]
    if missing:
        return [f"{missing} unset: it would not authenticate to a secured NATS"]
    errors = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    for name, key in SECURE_ENV.items():
        path = str(env[name])
        problems = secret_mount(pod, container, path)
        errors += problems
        folder, _, file = path.rpartition("/")
        secret = volumes.get(mounts.get(folder, ""), {}).get("secret", {})
        if not problems and secret.get("secretName") != CLIENT_SECRET:
            errors.append(f"{name}: {path} is not in the Secret {CLIENT_SECRET}")
        if file != key:
            errors.append(f"{name}: {path} is not the Secret's key {key}")
    fields = {name.removeprefix(NATS_ENV_PREFIX).lower(): value for name, value in env.items()}
    auth = NatsAuth.model_validate(fields)  # as the process would (files not read here)
    errors += [p for p in auth.problems() if not p.endswith("is not a readable file")]
    if auth.kinds() != ["creds"] or auth.tls_cert is None or auth.tls_ca is None:
        errors.append(f"NatsAuth reads {auth.describe()!r}, not creds over mutual TLS")
    if not url.startswith("tls://"):
        errors.append(f"SURGE_NATS_URL {url!r} does not insist on TLS (tls://)")
    return errors


def _open(pod: Mapping[str, Any], container: Mapping[str, Any], url: str) -> list[str]:
    errors = []
    env = auth_env(container)
    if env:
        errors.append(f"{sorted(env)} set without components/nats-auth")
    mounted = {m["name"] for m in container.get("volumeMounts", [])}
    if mounted & client_secret_volumes(pod):
        errors.append(f"mounts the Secret {CLIENT_SECRET} without components/nats-auth")
    if not url.startswith("nats://"):
        errors.append(f"SURGE_NATS_URL {url!r}: an open NATS is nats://")
    return errors


def check_no_secret_values(docs: Docs) -> list[str]:
    """Nothing secret in the rendering: no Secret object, key, certificate, seed or JWT."""
    errors = [
        f"{name_of(d)}: a Secret in the manifests (create it with kubectl)"
        for d in find(docs, "Secret")
    ]
    for doc in docs:
        text = yaml.safe_dump(doc)
        errors += [
            f"{name_of(doc)}: holds a {what}"
            for what, pattern in SECRET_VALUES.items()
            if pattern.search(text)
        ]
    return errors
