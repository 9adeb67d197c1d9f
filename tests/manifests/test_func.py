"""`func deploy` from manifests/func: the Knative Service it creates and the ScaledObject
autoscaler-keda makes of it are valid, scale from zero on queue depth through Surge's
scaler, and run the settings func.yaml gives."""

from __future__ import annotations

import copy
import json
import tomllib

import pytest

from function.contract.settings import JOBS_STREAM, WorkerSettings, consumer_name
from tests.manifests import contract
from tests.manifests.func_render import FUNC_ROOT, FuncYaml, func_yaml, knative_service
from tests.manifests.kube import (
    MANIFESTS,
    REPO,
    Doc,
    as_created_by_autoscaler_keda,
    override_of,
    rendered,
    validate_document,
)
from tests.manifests.lookup import find
from tests.manifests.scaling_checks import check_scaler_address

IMAGE = "registry.example/surge/surge-remove-bg@sha256:" + "0" * 64
LOCAL = {"SURGE_NATS_URL": "nats://nats.nats.svc.cluster.local:4222"}


@pytest.fixture(scope="module")
def func() -> FuncYaml:
    return func_yaml()


@pytest.fixture(scope="module")
def ksvc(func: FuncYaml) -> Doc:
    return knative_service(func, IMAGE, LOCAL)


@pytest.fixture(scope="module")
def scaled_object(ksvc: Doc) -> Doc:
    override = override_of(ksvc)
    assert override is not None, "no scaled-object-override: autoscaler-keda would scale on CPU"
    return as_created_by_autoscaler_keda(override, ksvc)


def container_settings(ksvc: Doc) -> WorkerSettings:
    """What `start(cfg)` reads in the function's container."""
    (container,) = ksvc["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return WorkerSettings.from_mapping(env)


def test_func_builds_python_with_the_host_builder(func: FuncYaml) -> None:
    assert (func.runtime, func.build.builder) == ("python", "host")


def test_the_function_root_installs_surge_as_func_expects() -> None:
    """func's scaffolding asks pip for `function @ <root>`: the root must be named so and
    bring the `function` package with `new`, from the surge distribution two levels up."""
    wrapper = tomllib.loads((FUNC_ROOT / "pyproject.toml").read_text())
    assert wrapper["project"]["name"] == "function"
    assert wrapper["project"]["dependencies"] == ["surge @ {root:parent:parent:uri}"]
    assert FUNC_ROOT.parents[1] == REPO
    surge = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert surge["project"]["name"] == "surge"
    assert "function*" in surge["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "from function.http.func import new" in (REPO / "function" / "__init__.py").read_text()


def as_defaulted_by_knative(ksvc: Doc) -> Doc:
    """Knative's webhook names an unnamed container `user-container` (func names none)."""
    defaulted = copy.deepcopy(ksvc)
    for container in defaulted["spec"]["template"]["spec"]["containers"]:
        container.setdefault("name", "user-container")
    return defaulted


def test_what_func_deploys_is_schema_valid(ksvc: Doc, scaled_object: Doc) -> None:
    """The Service (and its revision pod, and the override) and the ScaledObject as
    autoscaler-keda creates it, against the schemas in manifests/schemas."""
    assert validate_document(as_defaulted_by_knative(ksvc)) == []
    assert validate_document(scaled_object) == []


def test_it_scales_from_zero_on_queue_depth(ksvc: Doc, scaled_object: Doc) -> None:
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/class"] == contract.KNATIVE_HPA_CLASS
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    spec = scaled_object["spec"]
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == int(annotations["autoscaling.knative.dev/max-scale"])
    assert spec["scaleTargetRef"]["name"] == "surge-remove-bg-00001-deployment"
    settings = container_settings(ksvc)
    jetstream = [t for t in spec["triggers"] if t["type"] == "nats-jetstream"]
    assert {t["metadata"]["consumer"] for t in jetstream} == {
        consumer_name(settings.function, p) for p in ("high", "normal")
    }
    for trigger in jetstream:
        assert trigger["metadata"]["stream"] == JOBS_STREAM
        assert trigger["metadata"]["lagThreshold"] == str(settings.max_batch)
    (push,) = [t for t in spec["triggers"] if t["type"] == "external-push"]
    assert push["metadata"]["function"] == settings.function


def test_the_scaler_and_trigger_authentications_are_those_of_the_manifests(
    scaled_object: Doc, ksvc: Doc
) -> None:
    """func deploys the function only; the cluster parts come from the knative overlay."""
    cluster = [d for d in rendered("knative") if d.get("apiVersion") != "serving.knative.dev/v1"]
    auths = {d["metadata"]["name"] for d in find(cluster, "TriggerAuthentication")}
    for trigger in scaled_object["spec"]["triggers"]:
        assert trigger["authenticationRef"]["name"] in auths
    (push,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "external-push"]
    assert check_scaler_address([*cluster, ksvc], push["metadata"]["scalerAddress"]) == []
    assert ksvc["metadata"]["namespace"] == contract.NAMESPACE


def test_one_scaling_policy_for_func_and_the_overlays(ksvc: Doc) -> None:
    policy = json.loads((MANIFESTS / "scaling" / "scaledobject.json").read_text())
    assert override_of(ksvc) == policy


def test_func_yaml_settings_parse_as_the_worker_reads_them(ksvc: Doc) -> None:
    settings = container_settings(ksvc)
    assert settings.providers == ["cuda", "cpu"]
    assert settings.warmup_batch_sizes == [1, 8]
    assert str(settings.model_dir) in {m["mountPath"] for m in _mounts(ksvc)}


def _mounts(ksvc: Doc) -> list[Doc]:
    (container,) = ksvc["spec"]["template"]["spec"]["containers"]
    mounts: list[Doc] = container["volumeMounts"]
    return mounts


def test_a_func_yaml_without_the_override_is_caught(func: FuncYaml) -> None:
    """The check above is not empty: drop the override and the ScaledObject is gone."""
    annotations = {
        k: v for k, v in func.deploy.annotations.items() if k != contract.OVERRIDE_ANNOTATION
    }
    bare = func.model_copy(
        update={"deploy": func.deploy.model_copy(update={"annotations": annotations})}
    )
    assert override_of(knative_service(bare, IMAGE, LOCAL)) is None
