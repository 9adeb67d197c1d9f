"""Every overlay renders, and every document is valid against its upstream schema."""

from __future__ import annotations

from tests.manifests.checks import scaled_object_specs
from tests.manifests.kube import (
    CORE_API_VERSIONS,
    CRD_SCHEMAS,
    OVERLAYS,
    SCHEMAS,
    Doc,
    name_of,
    rendered,
    validate_document,
)

EXPECTED_KINDS = {
    "knative": {"Service.serving.knative.dev/v1"},
    "raw": {"Deployment.apps/v1", "ScaledObject.keda.sh/v1alpha1"},
}
SHARED_KINDS = {
    "Namespace.v1",
    "ConfigMap.v1",
    "Service.v1",
    "Deployment.apps/v1",
    "Stream.jetstream.nats.io/v1beta2",
    "Consumer.jetstream.nats.io/v1beta2",
    "TriggerAuthentication.keda.sh/v1alpha1",
}


def test_every_document_is_valid(docs: tuple[Doc, ...]) -> None:
    errors = [error for doc in docs for error in validate_document(doc)]
    assert errors == []


def test_every_kind_has_a_validator(docs: tuple[Doc, ...]) -> None:
    unchecked = [
        name_of(d)
        for d in docs
        if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS
        and d["apiVersion"] not in CORE_API_VERSIONS
    ]
    assert unchecked == []


def test_overlay_holds_the_expected_kinds(overlay: str, docs: tuple[Doc, ...]) -> None:
    kinds = {f"{d['kind']}.{d['apiVersion']}" for d in docs}
    flavour = overlay.partition("-")[0]  # knative-cpu, knative-secure: a knative overlay
    assert SHARED_KINDS | EXPECTED_KINDS[flavour] <= kinds
    if flavour == "knative":
        # autoscaler-keda makes the ScaledObject from the annotation; one here would fight it
        assert "ScaledObject.keda.sh/v1alpha1" not in kinds


def test_names_are_unique(docs: tuple[Doc, ...]) -> None:
    keys = [
        (d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in docs
    ]
    assert len(keys) == len(set(keys))


def test_local_inputs_are_not_deployed(docs: tuple[Doc, ...]) -> None:
    """manifests/site and the scaling policy's text are build inputs, dropped from the output."""
    leaked = [
        name_of(d)
        for d in docs
        if "config.kubernetes.io/local-config" in d["metadata"].get("annotations", {})
        or d["metadata"]["name"] in {"surge-site", "surge-scaledobject"}
    ]
    assert leaked == []


def test_schemas_are_in_the_project_and_all_used() -> None:
    """manifests/schemas holds what the validators read, no more, each named in its README."""
    triggers = {
        f"keda-trigger-{trigger['type']}.metadata.json"
        for overlay in OVERLAYS
        for _, scaled_object in scaled_object_specs(rendered(overlay))
        for trigger in scaled_object["spec"]["triggers"]
    }
    used = set(CRD_SCHEMAS.values()) | triggers
    assert {p.name for p in SCHEMAS.glob("*.json")} == used
    readme = (SCHEMAS / "README.md").read_text()
    assert [name for name in sorted(used) if f"`{name}`" not in readme] == []
