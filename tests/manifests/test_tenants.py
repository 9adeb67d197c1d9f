"""components/tenants: each tenant's jobs stream and consumers, as NACK resources.

The contract itself (each tenant's Stream is `tenant_stream_config` with the quota it
declares, its Consumers are `consumer_config(settings, priority, tenant)`, the
advisories stream captures its MAX_DELIVERIES advisories) is checked on every overlay
by `check_jetstream` (test_contract); here: what the component adds and nothing else,
and that a broken copy fails.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any, Final

import pytest

from function.contract.settings import ADVISORIES_STREAM, TENANT_STREAM_PREFIX
from tests.manifests import checks, jetstream_checks
from tests.manifests.kube import Doc, rendered, validate_document

Mutation = Callable[[list[Doc]], None]
SECURE: Final = "knative-secure"


def _is_tenants(doc: Doc) -> bool:
    spec = doc.get("spec", {})
    name = spec.get("streamName") if doc["kind"] == "Consumer" else spec.get("name")
    return doc["kind"] in {"Stream", "Consumer"} and str(name).startswith(TENANT_STREAM_PREFIX)


def _without_tenants(docs: tuple[Doc, ...]) -> str:
    """The rendering with what components/tenants adds taken out, comparable as text."""
    kept = copy.deepcopy([d for d in docs if not _is_tenants(d)])
    for doc in kept:
        if doc["kind"] == "Stream" and doc["spec"]["name"] == ADVISORIES_STREAM:
            doc["spec"]["subjects"] = doc["spec"]["subjects"][:1]
        if doc["kind"] == "ConfigMap":
            doc.get("data", {}).pop("SURGE_TENANTS", None)
    return re.sub(r"surge-settings-[a-z0-9]+", "surge-settings", json.dumps(kept, sort_keys=True))


def test_the_component_adds_tenants_and_nothing_else(knative_tenants: tuple[Doc, ...]) -> None:
    added = [d for d in knative_tenants if _is_tenants(d)]
    assert {(d["kind"], d["metadata"]["namespace"]) for d in added} == {
        ("Stream", "surge"),
        ("Consumer", "surge"),
    }
    assert _without_tenants(knative_tenants) == _without_tenants(rendered("knative"))
    assert [e for d in knative_tenants for e in validate_document(d)] == []
    assert [e for c in checks.ALL_CHECKS for e in c(knative_tenants)] == []


def test_metrics_name_the_declared_tenants() -> None:
    docs = rendered(SECURE)
    assert checks.worker_settings(docs).tenants == jetstream_checks.declared_tenants(docs)


# --- broken copies fail ------------------------------------------------------------------


def _spec(docs: list[Doc], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    spec: dict[str, Any] = found["spec"]
    return spec


def _settings(docs: list[Doc]) -> dict[str, str]:
    (found,) = [d for d in docs if d["metadata"]["name"].startswith("surge-settings")]
    data: dict[str, str] = found["data"]
    return data


def _drop(docs: list[Doc], name: str) -> None:
    docs[:] = [d for d in docs if d["metadata"]["name"] != name]


def _add_tenant_c(docs: list[Doc]) -> None:
    """A stream for tenant-c, without its consumers or advisories."""
    (stream,) = copy.deepcopy([d for d in docs if d["metadata"]["name"] == STREAM_A])
    stream["metadata"]["name"] = "surge-tenant-tenant-c"
    stream["spec"].update(name="SURGE_TENANT_tenant-c", subjects=["surge.jobs.*.*.tenant-c"])
    docs.append(stream)


STREAM_A, STREAM_B = "surge-tenant-tenant-a", "surge-tenant-tenant-b"
MUTATIONS: Final[dict[str, tuple[str, Mutation]]] = {
    "rate-not-as-the-worker-writes-it": (
        "metadata is {'surge.max_rate': '20.0'}, want {'surge.max_rate': '20'}",
        lambda d: _spec(d, "Stream", STREAM_A)["metadata"].update({"surge.max_rate": "20.0"}),
    ),
    "rate-under-another-key": (
        "metadata is {'max_rate': '20'}, want {}",
        lambda d: _spec(d, "Stream", STREAM_A).update(metadata={"max_rate": "20"}),
    ),
    "over-quota-drops-old-jobs": (
        "stream SURGE_TENANT_tenant-a: discard is 'old', want 'new'",
        lambda d: _spec(d, "Stream", STREAM_A).update(discard="old"),
    ),
    "takes-another-tenants-jobs": (
        "subjects is ['surge.jobs.*.*.*'], want ['surge.jobs.*.*.tenant-b']",
        lambda d: _spec(d, "Stream", STREAM_B).update(subjects=["surge.jobs.*.*.*"]),
    ),
    "own-dedupe-window-not-the-settings": (
        "duplicateWindow is 60.0, want 120.0 (SURGE_DEDUPE_WINDOW_S)",
        lambda d: _spec(d, "Stream", STREAM_B).update(duplicateWindow="1m"),
    ),
    "deletable": (
        "SURGE_TENANT_tenant-b: preventDelete must be true",
        lambda d: _spec(d, "Stream", STREAM_B).pop("preventDelete"),
    ),
    "consumer-filters-open-jobs": (
        "filterSubjects is ['surge.jobs.high.remove-bg'], "
        "want ['surge.jobs.high.remove-bg.tenant-a']",
        lambda d: _spec(d, "Consumer", f"{STREAM_A}-remove-bg-high").update(
            filterSubjects=["surge.jobs.high.remove-bg"]
        ),
    ),
    "consumer-ack-wait-not-the-settings": (
        "consumer surge-remove-bg-normal on SURGE_TENANT_tenant-b: ackWait is 30.0",
        lambda d: _spec(d, "Consumer", f"{STREAM_B}-remove-bg-normal").update(ackWait="30s"),
    ),
    "consumer-missing": (
        "consumers are",
        lambda d: _drop(d, f"{STREAM_B}-remove-bg-normal"),
    ),
    "advisories-not-captured": (
        "stream SURGE_ADVISORIES: subjects is",
        lambda d: _spec(d, "Stream", "surge-advisories")["subjects"].pop(),
    ),
    "stream-without-its-consumers-and-advisories": ("consumers are", _add_tenant_c),
    "invalid-tenant-id": (
        "SURGE_TENANT_<tenant> with an invalid tenant id",
        lambda d: _spec(d, "Stream", STREAM_B).update(name="SURGE_TENANT_Tenant.B"),
    ),
    "metrics-name-an-unknown-tenant": (
        "SURGE_TENANTS names ['tenant-c']",
        lambda d: _settings(d).update(SURGE_TENANTS='["tenant-a","tenant-b","tenant-c"]'),
    ),
}


@pytest.mark.parametrize(("expected", "mutate"), MUTATIONS.values(), ids=MUTATIONS)
def test_a_broken_tenant_is_caught(expected: str, mutate: Mutation) -> None:
    docs = copy.deepcopy(list(rendered(SECURE)))
    mutate(docs)
    errors = jetstream_checks.check_jetstream(docs)
    assert any(expected in e for e in errors), errors
