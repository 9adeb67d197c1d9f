"""KEDA talks to Surge's scaler over mutual TLS, from Secrets the repository never holds."""

from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Callable
from typing import Any

import pytest

from tests.manifests import contract, tls_checks
from tests.manifests.checks import find, scaled_object_specs
from tests.manifests.contract import OVERRIDE_ANNOTATION
from tests.manifests.kube import Doc, rendered

Mutation = Callable[[list[Doc]], None]
CHECKS = (tls_checks.check_scaler_serves_mutual_tls, tls_checks.check_keda_uses_tls)


def test_checks_pass(docs: tuple[Doc, ...]) -> None:
    assert [e for check in CHECKS for e in check(docs)] == []


def test_scaler_pod_reads_tls_from_a_read_only_secret(docs: tuple[Doc, ...]) -> None:
    ((_, pod, container),) = tls_checks.scaler_pods(docs)
    env = {v["name"]: v.get("value") for v in container["env"]}
    folder = posixpath.dirname(env["SURGE_SCALER_TLS_CERT"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "surge-scaler-tls"
    for name, key in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CLIENT_CA", "ca.crt")):
        assert env[f"SURGE_SCALER_TLS_{name}"] == f"{mount['mountPath']}/{key}"


def test_trigger_authenticates_with_ca_and_client_certificate(docs: tuple[Doc, ...]) -> None:
    ((_, scaled_object),) = scaled_object_specs(docs)
    (trigger,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "external-push"]
    name = trigger["authenticationRef"]["name"]
    (auth,) = [a for a in find(docs, "TriggerAuthentication") if a["metadata"]["name"] == name]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "caCert": ("surge-keda-tls", "ca.crt"),
        "tlsClientCert": ("surge-keda-tls", "tls.crt"),
        "tlsClientKey": ("surge-keda-tls", "tls.key"),
    }
    assert set(contract.KEDA_TLS_PARAMS) == set(refs)


# --- broken copies fail ------------------------------------------------------------


def scaler(docs: list[Doc]) -> tuple[Doc, Doc]:
    """(pod spec, container) of the scaler, to edit."""
    ((_, pod, container),) = tls_checks.scaler_pods(docs)
    return pod, container


def tls_volume(docs: list[Doc]) -> Doc:
    pod, _ = scaler(docs)
    volume: Doc = next(v for v in pod["volumes"] if v["name"] == "tls")
    return volume


def edit_trigger(docs: list[Doc], edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the external-push trigger, standalone or in the Knative override."""
    for so in find(docs, "ScaledObject"):
        edit(_push(so))
    for ksvc in find(docs, "Service", "serving.knative.dev/v1"):
        annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
        override = json.loads(annotations[OVERRIDE_ANNOTATION])
        edit(_push(override))
        annotations[OVERRIDE_ANNOTATION] = json.dumps(override)


def _push(scaled_object: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        t for t in scaled_object["spec"]["triggers"] if t["type"] == "external-push"
    )
    return found


def drop_env(docs: list[Doc], name: str) -> None:
    _, container = scaler(docs)
    container["env"] = [v for v in container["env"] if v["name"] != name]


def empty_dir(docs: list[Doc]) -> None:
    volume = tls_volume(docs)
    del volume["secret"]
    volume["emptyDir"] = {}


def owner_only(docs: list[Doc]) -> None:
    tls_volume(docs)["secret"]["defaultMode"] = 0o400
    del scaler(docs)[0]["securityContext"]["fsGroup"]


def tls_env(docs: list[Doc], name: str) -> Doc:
    found: Doc = next(v for v in scaler(docs)[1]["env"] if v["name"] == name)
    return found


def keda_auth(docs: list[Doc]) -> Doc:
    (auth,) = [
        a for a in find(docs, "TriggerAuthentication") if a["metadata"]["name"] == "surge-scaler"
    ]
    return auth


MUTATIONS: dict[str, tuple[str, Mutation]] = {
    "mount-writable": (
        "is not readOnly",
        lambda d: next(m for m in scaler(d)[1]["volumeMounts"] if m["name"] == "tls").update(
            readOnly=False
        ),
    ),
    "not-a-secret": ("is not a Secret", empty_dir),
    "optional-secret": ("is optional", lambda d: tls_volume(d)["secret"].update(optional=True)),
    "unreadable-files": ("cannot read it", owner_only),
    "path-outside-mount": (
        "not under any volume mount",
        lambda d: tls_env(d, "SURGE_SCALER_TLS_KEY").update(value="/etc/elsewhere/tls.key"),
    ),
    "no-client-ca": (
        "would not serve mutual TLS",
        lambda d: drop_env(d, "SURGE_SCALER_TLS_CLIENT_CA"),
    ),
    "no-authentication-ref": (
        "no TriggerAuthentication",
        lambda d: edit_trigger(d, lambda t: t.pop("authenticationRef")),
    ),
    "no-client-key": (
        "does not give ['tlsClientKey']",
        lambda d: keda_auth(d)["spec"]["secretTargetRef"].pop(),
    ),
    "keda-gets-the-server-key": (
        "the scaler's own Secret",
        lambda d: keda_auth(d)["spec"]["secretTargetRef"][2].update(name="surge-scaler-tls"),
    ),
    "unsafe-ssl": (
        "unsafeSsl",
        lambda d: edit_trigger(d, lambda t: t["metadata"].update(unsafeSsl="true")),
    ),
    "ca-in-metadata": (
        "metadata caCert",
        lambda d: edit_trigger(d, lambda t: t["metadata"].update(caCert="/etc/ca.pem")),
    ),
}


@pytest.mark.parametrize("overlay", ["knative", "raw"])
@pytest.mark.parametrize(("expected", "mutate"), MUTATIONS.values(), ids=MUTATIONS.keys())
def test_broken_tls_setup_is_caught(overlay: str, expected: str, mutate: Mutation) -> None:
    docs = copy.deepcopy(list(rendered(overlay)))
    mutate(docs)
    errors = [e for check in CHECKS for e in check(docs)]
    assert any(expected in e for e in errors), errors
