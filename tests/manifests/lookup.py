"""Finding things in a rendered overlay: documents by kind, ConfigMaps, the worker and
the settings its environment gives it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from function.contract.settings import ENV_PREFIX, WorkerSettings
from tests.manifests.kube import Doc, workloads

Docs = Sequence[Doc]


def find(docs: Docs, kind: str, api_version: str | None = None) -> list[Doc]:
    return [
        d
        for d in docs
        if d.get("kind") == kind and (api_version is None or d.get("apiVersion") == api_version)
    ]


def config_maps(docs: Docs) -> dict[str, Mapping[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in find(docs, "ConfigMap", "v1")}


def worker_workloads(docs: Docs) -> list[tuple[Doc, Doc]]:
    """(workload, pod spec) of the function itself (label component=worker)."""
    return [
        (doc, pod)
        for doc, pod in workloads(docs)
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "worker"
    ]


def worker_container(pod: Mapping[str, Any]) -> Doc:
    (found,) = [c for c in pod["containers"] if c["name"] == "worker"]
    container: Doc = found
    return container


def container_env(docs: Docs, container: Mapping[str, Any]) -> dict[str, str]:
    """A container's literal environment: envFrom ConfigMaps, then `env` values."""
    maps = config_maps(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is not None:
            env.update(maps.get(ref["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly `values` as the SURGE_* environment, restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def settings_from_env(values: Mapping[str, str]) -> WorkerSettings:
    """WorkerSettings as a process with exactly this SURGE_* environment would see them."""
    with _environment({k: v for k, v in values.items() if k.startswith(ENV_PREFIX)}):
        return WorkerSettings()


def worker_settings(docs: Docs) -> WorkerSettings:
    """The settings the (first) worker container starts with."""
    _, pod = worker_workloads(docs)[0]
    return settings_from_env(container_env(docs, worker_container(pod)))
