"""A broken manifest fails the tests: mutate a rendered document, expect an error.

Each mutation is a mistake a person could make (a misspelt field, a wrong trigger
key, a value that no longer matches the settings); the unmutated renderings pass
the same validators in test_schemas and test_contract.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from tests.manifests import checks
from tests.manifests.contract import OVERRIDE_ANNOTATION
from tests.manifests.kube import Doc, rendered, validate_document

Mutation = Callable[[list[Doc]], None]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def ksvc(docs: list[Doc]) -> Doc:
    return one([d for d in docs if d["apiVersion"] == "serving.knative.dev/v1"], "Service")


def raw_worker(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment", "surge-remove-bg")


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def edit_override(docs: list[Doc], edit: Callable[[dict[str, Any]], None]) -> None:
    annotations = ksvc(docs)["spec"]["template"]["metadata"]["annotations"]
    override = json.loads(annotations[OVERRIDE_ANNOTATION])
    edit(override)
    annotations[OVERRIDE_ANNOTATION] = json.dumps(override)


def trigger(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(t for t in spec["triggers"] if t["type"] == kind)


def settings_data(docs: list[Doc]) -> dict[str, str]:
    data: dict[str, str] = next(
        d for d in docs if d["metadata"]["name"].startswith("surge-settings")
    )["data"]
    return data


# Mistakes the schemas catch: (overlay, part of the expected error, mutation).
SCHEMA_MUTATIONS: dict[str, tuple[str, str, Mutation]] = {
    "scaledobject-misspelt-field": (
        "raw",
        "'minReplicas' was unexpected",
        lambda d: rename(one(d, "ScaledObject")["spec"], "minReplicaCount", "minReplicas"),
    ),
    "scaledobject-wrong-trigger-key": (
        "raw",
        "'lagTreshold' was unexpected",
        lambda d: rename(
            trigger(one(d, "ScaledObject")["spec"], "nats-jetstream")["metadata"],
            "lagThreshold",
            "lagTreshold",
        ),
    ),
    "scaledobject-unknown-trigger-type": (
        "raw",
        "no metadata schema for type 'externalpush'",
        lambda d: trigger(one(d, "ScaledObject")["spec"], "external-push").update(
            type="externalpush"
        ),
    ),
    "scaledobject-bad-boolean": (
        "raw",
        "useHttps: 'no' does not match",
        lambda d: trigger(one(d, "ScaledObject")["spec"], "nats-jetstream")["metadata"].update(
            useHttps="no"
        ),
    ),
    "ksvc-misspelt-probe": (
        "knative",
        "'readynessProbe' was unexpected",
        lambda d: rename(
            ksvc(d)["spec"]["template"]["spec"]["containers"][0], "readinessProbe", "readynessProbe"
        ),
    ),
    "ksvc-misspelt-toleration": (
        "knative",
        "'efect' was unexpected",
        lambda d: rename(ksvc(d)["spec"]["template"]["spec"]["tolerations"][0], "effect", "efect"),
    ),
    "ksvc-misspelt-init-container-field": (
        "knative",
        "'volumeMount' was unexpected",
        lambda d: rename(
            ksvc(d)["spec"]["template"]["spec"]["initContainers"][0], "volumeMounts", "volumeMount"
        ),
    ),
    "ksvc-annotation-not-a-string": (
        "knative",
        "0 is not of type 'string'",
        lambda d: ksvc(d)["spec"]["template"]["metadata"]["annotations"].update(
            {"autoscaling.knative.dev/min-scale": 0}
        ),
    ),
    "override-misspelt-field": (
        "knative",
        "'coolDownPeriod' was unexpected",
        lambda d: edit_override(
            d, lambda so: rename(so["spec"], "cooldownPeriod", "coolDownPeriod")
        ),
    ),
    "override-wrong-trigger-key": (
        "knative",
        "'streamName' was unexpected",
        lambda d: edit_override(
            d,
            lambda so: rename(
                trigger(so["spec"], "nats-jetstream")["metadata"], "stream", "streamName"
            ),
        ),
    ),
    "override-not-json": (
        "knative",
        "Expecting property name",
        lambda d: ksvc(d)["spec"]["template"]["metadata"]["annotations"].update(
            {OVERRIDE_ANNOTATION: "{'spec': {}}"}
        ),
    ),
    "nack-consumer-bad-enum": (
        "raw",
        "'explict' is not one of",
        lambda d: one(d, "Consumer", "surge-remove-bg-high")["spec"].update(ackPolicy="explict"),
    ),
    "nack-stream-misspelt-field": (
        "raw",
        "'maxMsgPerSubject' was unexpected",
        lambda d: rename(
            one(d, "Stream", "surge-results")["spec"], "maxMsgsPerSubject", "maxMsgPerSubject"
        ),
    ),
    "trigger-authentication-misspelt-field": (
        "knative",
        "'parameter' is a required property",
        lambda d: rename(
            one(d, "TriggerAuthentication", "surge-nats")["spec"]["secretTargetRef"][0],
            "parameter",
            "param",
        ),
    ),
    "deployment-misspelt-field": (
        "raw",
        "'resource' was unexpected",
        lambda d: rename(
            raw_worker(d)["spec"]["template"]["spec"]["containers"][0], "resources", "resource"
        ),
    ),
    "service-bad-port-type": (
        "raw",
        "'grpc' is not of type 'integer'",
        lambda d: one(d, "Service", "surge-scaler")["spec"]["ports"][0].update(port="grpc"),
    ),
}

# Mistakes only the cross-checks catch: the documents stay schema-valid.
CONTRACT_MUTATIONS: dict[str, tuple[str, str, Mutation]] = {
    "lag-threshold-not-batch-size": (
        "raw",
        "lagThreshold '16' != SURGE_MAX_BATCH",
        lambda d: trigger(one(d, "ScaledObject")["spec"], "nats-jetstream")["metadata"].update(
            lagThreshold="16"
        ),
    ),
    "trigger-consumer-name": (
        "knative",
        "'remove-bg-high'",
        lambda d: edit_override(
            d,
            lambda so: trigger(so["spec"], "nats-jetstream")["metadata"].update(
                consumer="remove-bg-high"
            ),
        ),
    ),
    "scaler-address-port": (
        "knative",
        "has no port 9091",
        lambda d: edit_override(
            d,
            lambda so: trigger(so["spec"], "external-push")["metadata"].update(
                scalerAddress="surge-scaler.surge.svc:9091"
            ),
        ),
    ),
    "initial-cooldown-shorter-than-cold-start": (
        "raw",
        "initialCooldownPeriod 60s is shorter",
        lambda d: one(d, "ScaledObject")["spec"].update(initialCooldownPeriod=60),
    ),
    "advanced-without-hpa-config": (
        "knative",
        "without `horizontalPodAutoscalerConfig`",
        lambda d: edit_override(
            d, lambda so: so["spec"].update(advanced={"restoreToOriginalReplicaCount": True})
        ),
    ),
    "max-scale-disagrees": (
        "knative",
        "!= max-scale 9",
        lambda d: ksvc(d)["spec"]["template"]["metadata"]["annotations"].update(
            {"autoscaling.knative.dev/max-scale": "9"}
        ),
    ),
    "nack-ack-wait-not-settings": (
        "raw",
        "ackWait is 30.0, want 60.0 (SURGE_ACK_WAIT_S)",
        lambda d: one(d, "Consumer", "surge-remove-bg-normal")["spec"].update(ackWait="30s"),
    ),
    "nack-filter-subject": (
        "raw",
        "filterSubjects is ['surge.jobs.remove-bg']",
        lambda d: one(d, "Consumer", "surge-remove-bg-high")["spec"].update(
            filterSubjects=["surge.jobs.remove-bg"]
        ),
    ),
    "nack-jobs-stream-takes-tenants-jobs": (
        "raw",
        "stream SURGE_JOBS: subjects is",
        lambda d: one(d, "Stream", "surge-jobs")["spec"]["subjects"].append("surge.jobs.high.*.*"),
    ),
    "nack-sweeper-misses-tenants": (
        "raw",
        "MAX_DELIVERIES.SURGE_JOBS.surge-remove-bg-high'",
        lambda d: one(d, "Consumer", "surge-remove-bg-sweeper")["spec"].update(
            filterSubjects=[
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SURGE_JOBS.surge-remove-bg-{p}"
                for p in ("high", "normal")
            ]
        ),
    ),
    "nack-stream-memory-storage": (
        "raw",
        "storage is 'memory', want 'file'",
        lambda d: one(d, "Stream", "surge-jobs")["spec"].pop("storage"),
    ),
    "grace-shorter-than-ack-wait": (
        "knative",
        "termination grace 30.0s < SURGE_ACK_WAIT_S",
        lambda d: ksvc(d)["spec"]["template"]["spec"].update(timeoutSeconds=30),
    ),
    "unknown-setting-in-configmap": (
        "raw",
        "SURGE_MAX_BATCHES is not a WorkerSettings field",
        lambda d: rename(settings_data(d), "SURGE_MAX_BATCH", "SURGE_MAX_BATCHES"),
    ),
    "invalid-setting-value": (
        "knative",
        "greater than or equal to 1",
        lambda d: settings_data(d).update(SURGE_MAX_BATCH="0"),
    ),
    "probe-path-not-served": (
        "raw",
        "livenessProbe must GET",
        lambda d: raw_worker(d)["spec"]["template"]["spec"]["containers"][0]["livenessProbe"][
            "httpGet"
        ].update(path="/healthz"),
    ),
    "writable-root-filesystem": (
        "knative",
        "readOnlyRootFilesystem must be true",
        lambda d: ksvc(d)["spec"]["template"]["spec"]["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    ),
    "secret-in-manifests": (
        "raw",
        "Secret/surge-nats",
        lambda d: d.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "surge-nats", "namespace": "surge"},
                "stringData": {"account": "$G"},
            }
        ),
    ),
    "credentials-in-url": (
        "knative",
        "credentials in a URL",
        lambda d: settings_data(d).update(SURGE_NATS_URL="nats://surge:hunter2@nats.nats.svc:4222"),
    ),
    "placeholder-image": (
        "raw",
        "placeholder was not replaced",
        lambda d: raw_worker(d)["spec"]["template"]["spec"]["containers"][0].update(image="surge"),
    ),
}


def broken(overlay: str, mutate: Mutation) -> list[Doc]:
    docs = copy.deepcopy(list(rendered(overlay)))
    mutate(docs)
    return docs


@pytest.mark.parametrize(
    ("overlay", "expected", "mutate"), SCHEMA_MUTATIONS.values(), ids=SCHEMA_MUTATIONS.keys()
)
def test_schema_validation_catches(overlay: str, expected: str, mutate: Mutation) -> None:
    errors = [error for doc in broken(overlay, mutate) for error in validate_document(doc)]
    assert errors, "the broken document passed validation"
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize(
    ("overlay", "expected", "mutate"), CONTRACT_MUTATIONS.values(), ids=CONTRACT_MUTATIONS.keys()
)
def test_cross_checks_catch(overlay: str, expected: str, mutate: Mutation) -> None:
    docs = broken(overlay, mutate)
    errors: list[str] = []
    for check in checks.ALL_CHECKS:
        try:
            errors += check(docs)
        except ValidationError as error:  # settings that do not even parse
            errors.append(f"{check.__name__}: {error}")
    assert errors, "the broken manifests passed every cross-check"
    assert any(expected in error for error in errors), errors


def test_mutations_leave_the_shared_rendering_alone() -> None:
    """The mutations work on copies: the cached renderings still pass."""
    for overlay in ("knative", "raw"):
        docs = rendered(overlay)
        assert [e for d in docs for e in validate_document(d)] == []
        assert [e for c in checks.ALL_CHECKS for e in c(docs)] == []
