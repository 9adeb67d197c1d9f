"""What `func deploy` makes of manifests/func/func.yaml, rendered offline.

Mirrors knative/func's Knative deployer (pkg/knative/deployer.go `generateNewService`
and `setServiceOptions`; pkg/k8s/deployer.go `ProcessEnvs`, `ProcessVolumes`,
`SetHealthEndpoints`, `SetSecurityContext`; pkg/deployer/common.go labels and
annotations) for the parts of func.yaml Surge uses, and fails on any other part, so
that a new field is not silently left out. `func_yaml` parses with the field names of
func's schema (schema/func_yaml-schema.json), unknown fields being errors as there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tests.manifests.kube import Doc

FUNC_ROOT = Path(__file__).resolve().parents[2] / "manifests" / "func"
DEPLOYER_ANNOTATION = "function.knative.dev/deployer"
PROBE_PORT = 8080  # func's DefaultHTTPPort
_REFERENCE = re.compile(r"^\{\{\s*(\w+)\s*:([^}]*)\}\}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Env(_Strict):
    name: str | None = None
    value: str


class EmptyDir(_Strict):
    medium: str = ""
    size_limit: str | None = Field(default=None, alias="sizeLimit")


class Volume(_Strict):
    empty_dir: EmptyDir = Field(alias="emptyDir")  # the only kind Surge uses
    path: str


class Build(_Strict):
    builder: Literal["host", "pack", "s2i"]
    base_image: str | None = Field(default=None, alias="baseImage")


class Run(_Strict):
    envs: list[Env] = []
    volumes: list[Volume] = []


class Label(_Strict):
    key: str
    value: str


class Scale(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class Quantities(_Strict):
    cpu: str | None = None
    memory: str | None = None


class Resources(_Strict):
    requests: Quantities | None = None
    limits: Quantities | None = None


class Options(_Strict):
    scale: Scale | None = None
    resources: Resources | None = None


class Health(_Strict):
    liveness: str = "/health/liveness"
    readiness: str = "/health/readiness"


class Deploy(_Strict):
    namespace: str
    labels: list[Label] = []
    annotations: dict[str, str] = {}
    options: Options = Options()
    health_endpoints: Health = Field(default=Health(), alias="healthEndpoints")


class FuncYaml(_Strict):
    """The parts of func.yaml that Surge's uses (func's names)."""

    spec_version: str = Field(alias="specVersion")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    runtime: str
    created: datetime
    build: Build
    run: Run
    deploy: Deploy


def func_yaml(root: Path = FUNC_ROOT) -> FuncYaml:
    return FuncYaml.model_validate(yaml.safe_load((root / "func.yaml").read_text()))


def _env(entry: Env, local: Mapping[str, str]) -> Doc:
    found = _REFERENCE.match(entry.value)
    if found is None:
        return {"name": entry.name, "value": entry.value}
    kind, args = found[1], [part.strip() for part in found[2].split(":")]
    if kind == "env" and len(args) == 1:
        if args[0] not in local:
            raise ValueError(f"required local environment variable {args[0]!r} is not set")
        return {"name": entry.name, "value": local[args[0]]}
    if kind in ("secret", "configMap") and len(args) == 2:
        ref = "secretKeyRef" if kind == "secret" else "configMapKeyRef"
        return {"name": entry.name, "valueFrom": {ref: {"name": args[0], "key": args[1]}}}
    raise ValueError(f"func.yaml env {entry.name}: unsupported {entry.value!r}")


def _quantities(quantities: Quantities | None) -> dict[str, str]:
    return {} if quantities is None else quantities.model_dump(exclude_none=True)


def knative_service(f: FuncYaml, image: str, local: Mapping[str, str]) -> Doc:
    """The Knative Service `func deploy` creates (Dapr not installed on the cluster)."""
    env = [{"name": "BUILT", "value": "20261126T000000"}]
    env += [_env(e, local) for e in f.run.envs]
    if not any(e.name == "ADDRESS" for e in f.run.envs):
        env.append({"name": "ADDRESS", "value": "0.0.0.0"})
    volumes, mounts = [], []
    for i, volume in enumerate(f.run.volumes):
        name = f"empty-dir-{i:07d}"  # func: "empty-dir-" + 7 random characters
        source = volume.empty_dir.model_dump(by_alias=True, exclude_defaults=True)
        volumes.append({"name": name, "emptyDir": source})
        mounts.append({"name": name, "mountPath": volume.path})
    health = f.deploy.health_endpoints
    container: Doc = {
        "image": image,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "livenessProbe": {"httpGet": {"path": health.liveness, "port": PROBE_PORT}},
        "readinessProbe": {"httpGet": {"path": health.readiness, "port": PROBE_PORT}},
        "env": env,
        "volumeMounts": mounts,
    }
    resources = f.deploy.options.resources or Resources()
    requests, limits = _quantities(resources.requests), _quantities(resources.limits)
    if requests or limits:
        container["resources"] = {
            key: value for key, value in (("requests", requests), ("limits", limits)) if value
        }
    labels = {label.key: label.value for label in f.deploy.labels}
    labels |= {
        "boson.dev/function": "true",
        "function.knative.dev/name": f.name,
        "function.knative.dev/runtime": f.runtime,
    }
    annotations = {DEPLOYER_ANNOTATION: "knative", **f.deploy.annotations}
    revision = dict(annotations)
    scale = f.deploy.options.scale
    if scale is not None:  # setServiceOptions: on the revision template only
        for key, value in (("min-scale", scale.min), ("max-scale", scale.max)):
            revision.pop(f"autoscaling.knative.dev/{key}", None)
            if value is not None:
                revision[f"autoscaling.knative.dev/{key}"] = str(value)
        for key in ("metric", "target", "target-utilization-percentage"):
            revision.pop(f"autoscaling.knative.dev/{key}", None)
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": f.name,
            "namespace": f.deploy.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "template": {
                "metadata": {"labels": dict(labels), "annotations": revision},
                "spec": pod,
            }
        },
    }
