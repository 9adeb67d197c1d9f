"""Every overlay renders, and every document is valid against its upstream schema."""

from __future__ import annotations

from tests.manifests.kube import CORE_API_VERSIONS, CRD_SCHEMAS, Doc, name_of, validate_document

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
    flavour = overlay.removesuffix("-cpu")
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
