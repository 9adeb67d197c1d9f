"""Surge on a secured NATS: components/nats-auth.

The component is checked in every overlay (on in `knative-secure` and in a `raw`
overlay made with it here, off in the others): the worker and the scaler read their
credentials from a read-only Secret mount, nothing else changes, and a broken copy
fails. The accounts it connects with are in test_nats_accounts.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Final

import pytest
import yaml

from tests.manifests import nats_auth_checks
from tests.manifests.kube import (
    MANIFESTS,
    OVERLAYS,
    SECURE_OVERLAYS,
    TENANTS_COMPONENT,
    Doc,
    containers,
    render_overlay,
    rendered,
    validate_document,
    workloads,
)

COMPONENT: Final = "../../components/nats-auth"
Mutation = Callable[[list[Doc]], None]


# --- the component --------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_secure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, ...]:
    """The raw overlay with components/nats-auth, as a user would add it."""
    kustomization = {"resources": ["../raw"], "components": [COMPONENT]}
    return tuple(render_overlay(tmp_path_factory.mktemp("raw"), "raw-secure", kustomization))


def test_secure_overlays_use_the_component() -> None:
    for overlay in OVERLAYS:
        text = (MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text()
        components = yaml.safe_load(text).get("components", [])
        assert (COMPONENT in components) == (overlay in SECURE_OVERLAYS), overlay
        assert (TENANTS_COMPONENT in components) == (overlay in SECURE_OVERLAYS), overlay


def test_nats_auth_matches_the_overlay(overlay: str, docs: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_nats_auth(docs, secure=overlay in SECURE_OVERLAYS) == []


def test_no_secret_value_is_rendered(docs: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_no_secret_values(docs) == []


def test_the_component_works_on_raw_too(raw_secure: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_nats_auth(raw_secure, secure=True) == []
    assert nats_auth_checks.check_no_secret_values(raw_secure) == []
    assert [e for doc in raw_secure for e in validate_document(doc)] == []


@pytest.mark.parametrize("overlay", SECURE_OVERLAYS)
def test_worker_and_scaler_read_the_secret_read_only(overlay: str) -> None:
    clients = nats_auth_checks.nats_clients(rendered(overlay))
    assert {tuple(c["command"]) for _, _, c in clients} == nats_auth_checks.NATS_CLIENT_COMMANDS
    for _, pod, container in clients:
        env = {v["name"]: v.get("value") for v in container["env"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/surge/nats"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount["readOnly"] is True
        assert volume["secret"]["secretName"] == "surge-nats-client"
        assert volume["secret"].get("optional", False) is False
        assert env["SURGE_NATS_CREDS"] == "/etc/surge/nats/user.creds"
        assert env["SURGE_NATS_TLS_CA"] == "/etc/surge/nats/ca.crt"
        assert env["SURGE_NATS_TLS_CERT"] == "/etc/surge/nats/tls.crt"
        assert env["SURGE_NATS_TLS_KEY"] == "/etc/surge/nats/tls.key"


def _without_nats_auth(docs: tuple[Doc, ...]) -> str:
    """The rendering with what components/nats-auth adds taken out, comparable as text."""
    stripped = copy.deepcopy(list(docs))
    for _, pod in workloads(stripped):
        secret = nats_auth_checks.client_secret_volumes(pod)
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in secret]
        for c in containers(pod):
            c["env"] = [v for v in c.get("env", []) if v["name"] not in nats_auth_checks.SECURE_ENV]
            c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] not in secret]
    text = json.dumps(stripped, sort_keys=True).replace("tls://", "nats://")
    return re.sub(r"surge-settings-[a-z0-9]+", "surge-settings", text)


def test_the_component_changes_nothing_else(
    raw_secure: tuple[Doc, ...], knative_tenants: tuple[Doc, ...]
) -> None:
    """knative-secure is knative with components/tenants and this component; the raw
    overlay with it is raw."""
    assert _without_nats_auth(rendered("knative-secure")) == _without_nats_auth(knative_tenants)
    assert _without_nats_auth(raw_secure) == _without_nats_auth(rendered("raw"))


# --- broken copies fail -------------------------------------------------------------


def _clients(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    return [(pod, c) for _, pod, c in nats_auth_checks.nats_clients(docs)]


def _scaler(docs: list[Doc]) -> tuple[Doc, Doc]:
    return next((p, c) for p, c in _clients(docs) if c["command"][1] == "scaler")


def _worker(docs: list[Doc]) -> tuple[Doc, Doc]:
    return next((p, c) for p, c in _clients(docs) if c["command"][1] == "worker")


def _secret_volume(pod: Doc) -> Doc:
    volume: Doc = next(v for v in pod["volumes"] if v["name"] == "nats-client")
    return volume


def _drop_env(container: Doc, name: str) -> None:
    container["env"] = [v for v in container["env"] if v["name"] != name]


def _set_url(docs: list[Doc], url: str) -> None:
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("surge-settings"):
            doc["data"]["SURGE_NATS_URL"] = url


def _mount_in_init(docs: list[Doc]) -> None:
    pod, _ = _worker(docs)
    pod["initContainers"][0]["volumeMounts"].append(
        {"name": "nats-client", "mountPath": "/etc/surge/nats", "readOnly": True}
    )


def _mount_in_scaler(docs: list[Doc]) -> None:
    pod, container = _scaler(docs)
    pod["volumes"].append({"name": "nats-client", "secret": {"secretName": "surge-nats-client"}})
    container["volumeMounts"].append(
        {"name": "nats-client", "mountPath": "/etc/surge/nats", "readOnly": True}
    )


SECURE_MUTATIONS: Final[dict[str, tuple[str, Mutation]]] = {
    "mount-writable": (
        "is not readOnly",
        lambda d: next(
            m for m in _scaler(d)[1]["volumeMounts"] if m["name"] == "nats-client"
        ).update(readOnly=False),
    ),
    "optional-secret": (
        "is optional",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(optional=True),
    ),
    "another-secret": (
        "is not in the Secret surge-nats-client",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(secretName="surge-scaler-tls"),
    ),
    "owner-only-files": (
        "cannot read it",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(defaultMode=0o400),
    ),
    "no-client-key": (
        "['SURGE_NATS_TLS_KEY'] unset",
        lambda d: _drop_env(_scaler(d)[1], "SURGE_NATS_TLS_KEY"),
    ),
    "no-creds-in-the-worker": (
        "unset: it would not authenticate",
        lambda d: _drop_env(_worker(d)[1], "SURGE_NATS_CREDS"),
    ),
    "two-kinds-of-credential": (
        "give one kind of NATS credential",
        lambda d: _worker(d)[1]["env"].append(
            {"name": "SURGE_NATS_NKEY", "value": "/etc/surge/nats/user.nk"}
        ),
    ),
    "plain-url": ("does not insist on TLS", lambda d: _set_url(d, "nats://nats:4222")),
    "init-step-gets-credentials": ("must not get its credentials", _mount_in_init),
    "a-key-inlined": (
        "holds a PEM block",
        lambda d: _scaler(d)[1]["env"].append(
            {"name": "KEY", "value": "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n"}
        ),
    ),
    "a-secret-object": (
        "a Secret in the manifests",
        lambda d: d.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "surge-nats-client"}}
        ),
    ),
}

OPEN_MUTATIONS: Final[dict[str, tuple[str, Mutation]]] = {
    "creds-without-component": (
        "set without components/nats-auth",
        lambda d: _worker(d)[1]["env"].append(
            {"name": "SURGE_NATS_CREDS", "value": "/etc/surge/nats/user.creds"}
        ),
    ),
    "secret-without-component": ("without components/nats-auth", _mount_in_scaler),
    "a-jwt-inlined": (
        "holds a JWT",
        lambda d: _set_url(d, "nats://eyJ0eXAiOiJKV1Qi.eyJqdGkiOiJBQkNE.c2lnbmF0dXJl@nats:4222"),
    ),
}


def _errors(docs: list[Doc], *, secure: bool) -> list[str]:
    return nats_auth_checks.check_nats_auth(
        docs, secure=secure
    ) + nats_auth_checks.check_no_secret_values(docs)


@pytest.mark.parametrize(("expected", "mutate"), SECURE_MUTATIONS.values(), ids=SECURE_MUTATIONS)
def test_broken_secure_setup_is_caught(
    raw_secure: tuple[Doc, ...], expected: str, mutate: Mutation
) -> None:
    for docs in (copy.deepcopy(list(rendered("knative-secure"))), copy.deepcopy(list(raw_secure))):
        mutate(docs)
        errors = _errors(docs, secure=True)
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(("expected", "mutate"), OPEN_MUTATIONS.values(), ids=OPEN_MUTATIONS)
@pytest.mark.parametrize("overlay", ["knative", "raw"])
def test_broken_open_setup_is_caught(overlay: str, expected: str, mutate: Mutation) -> None:
    docs = copy.deepcopy(list(rendered(overlay)))
    mutate(docs)
    errors = _errors(docs, secure=False)
    assert any(expected in e for e in errors), errors
