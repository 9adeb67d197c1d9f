"""The manifests agree with the function's settings, endpoints and CLI, and with themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import typer.main

from function.cli import full_app
from function.contract.settings import ADVISORIES_STREAM, JOBS_STREAM, Priority
from function.http.func import Function
from function.transport.topology import consumer_config, stream_configs, sweeper_config
from tests.manifests import checks, contract
from tests.manifests.kube import (
    REPO,
    Doc,
    containers,
    go_duration,
    override_of,
    rendered,
    workloads,
)

Check = Callable[[Sequence[Doc]], list[str]]


@pytest.mark.parametrize(
    "check", checks.ALL_CHECKS, ids=lambda c: c.__name__.removeprefix("check_")
)
def test_check(docs: tuple[Doc, ...], check: Check) -> None:
    assert check(docs) == []


def test_gpu(overlay: str, docs: tuple[Doc, ...]) -> None:
    assert checks.check_gpu(docs, gpu=not overlay.endswith("-cpu")) == []


def test_knative_and_raw_scale_alike() -> None:
    """The Knative override and the raw ScaledObject are one policy (manifests/scaling)."""
    (ksvc,) = checks.find(rendered("knative"), "Service", "serving.knative.dev/v1")
    (raw,) = checks.find(rendered("raw"), "ScaledObject", "keda.sh/v1alpha1")
    override = override_of(ksvc)
    assert override is not None
    assert override["spec"] == raw["spec"]


def test_knative_and_raw_run_the_same_pod() -> None:
    """Same containers, volumes and scheduling in both flavours (Knative-only fields aside)."""
    (_, kpod), (_, rpod) = (checks.worker_workloads(rendered(o))[0] for o in ("knative", "raw"))

    def comparable(pod: dict[str, Any]) -> dict[str, Any]:
        def strip(c: dict[str, Any]) -> dict[str, Any]:
            c = {k: v for k, v in c.items() if k not in {"ports", "securityContext"}}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c:
                    c[probe] = {**c[probe], "httpGet": {"path": c[probe]["httpGet"]["path"]}}
            return c

        return {
            "containers": [strip(c) for c in pod["containers"]],
            "initContainers": [strip(c) for c in pod.get("initContainers", [])],
            "volumes": pod.get("volumes"),
            "nodeSelector": pod.get("nodeSelector"),
            "tolerations": pod.get("tolerations"),
        }

    assert comparable(kpod) == comparable(rpod)


def test_nack_matches_worker_topology(docs: tuple[Doc, ...]) -> None:
    """NACK creates what the worker would create itself (else it stops with TopologyMismatch)."""
    settings = checks.worker_settings(docs)
    streams = {d["spec"]["name"]: d["spec"] for d in checks.find(docs, "Stream")}
    for config in stream_configs(settings):
        spec = streams[config.name]
        assert spec["subjects"] == config.subjects
        assert spec["retention"] == config.retention.value
        assert spec["storage"] == config.storage.value
        assert spec.get("maxMsgsPerSubject", -1) == config.max_msgs_per_subject
        assert go_duration(spec.get("maxAge") or "0s") == pytest.approx(config.max_age or 0)
        if config.duplicate_window:
            assert go_duration(spec["duplicateWindow"]) == pytest.approx(config.duplicate_window)
        assert spec.get("allowDirect", False) == bool(config.allow_direct)
        if config.discard is not None:
            assert spec.get("discard", "old") == config.discard.value
    consumers = {d["spec"]["durableName"]: d["spec"] for d in checks.find(docs, "Consumer")}
    for priority in Priority:
        config = consumer_config(settings, priority)
        spec = consumers[config.durable_name]
        assert spec["streamName"] == JOBS_STREAM
        assert spec["filterSubjects"] == config.filter_subjects
        assert spec["ackPolicy"] == config.ack_policy.value
        assert spec.get("deliverPolicy", "all") == config.deliver_policy.value
        assert go_duration(spec["ackWait"]) == pytest.approx(config.ack_wait)
        assert spec["maxDeliver"] == config.max_deliver
        assert spec["maxAckPending"] == config.max_ack_pending
    sweeper = sweeper_config(settings)
    spec = consumers[sweeper.durable_name]
    assert spec["streamName"] == ADVISORIES_STREAM
    assert spec["filterSubjects"] == sweeper.filter_subjects
    assert spec["ackPolicy"] == sweeper.ack_policy.value
    assert go_duration(spec["ackWait"]) == pytest.approx(sweeper.ack_wait)
    assert spec["maxAckPending"] == sweeper.max_ack_pending


def test_probe_paths_are_served_by_the_function() -> None:
    served = {getattr(route, "path", "") for route in Function().app.routes}
    wanted = {contract.LIVENESS_PATH, contract.READINESS_PATH, contract.METRICS_PATH}
    assert wanted <= served


def _surge_commands() -> list[tuple[str, ...]]:
    found = set()
    for overlay in ("knative", "raw"):
        for _, pod in workloads(rendered(overlay)):
            for c in containers(pod):
                if c.get("command", [None])[0] == "surge":
                    found.add(tuple(c["command"]))
    return sorted(found)


@pytest.mark.parametrize("command", _surge_commands(), ids=" ".join)
def test_commands_exist_in_the_cli(command: tuple[str, ...]) -> None:
    """Each `surge ...` container command exists in function/cli.py, options included."""
    group: Any = typer.main.get_command(full_app())
    words = list(command[1:])
    while words and not words[0].startswith("-"):
        sub = getattr(group, "commands", {}).get(words[0])
        assert sub is not None, f"`{' '.join(command)}`: no subcommand {words[0]!r}"
        group, words = sub, words[1:]
    options = {opt for param in group.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [w for w in words if w.startswith("-") and w not in options]
    assert unknown == []


def test_scaler_address_check_catches_a_wrong_port() -> None:
    docs = rendered("raw")
    assert checks.check_scaler_address(docs, "surge-scaler.surge.svc:9090") == []
    assert checks.check_scaler_address(docs, "surge-scaler.surge.svc.cluster.local:9090") == []
    assert checks.check_scaler_address(docs, "surge-scaler.surge.svc:8080") != []
    assert checks.check_scaler_address(docs, "surge-scaler.default.svc:9090") != []
    assert checks.check_scaler_address(docs, "scaler:9090") != []


def test_durations() -> None:
    assert go_duration("60s") == 60
    assert go_duration("1h30m") == 5400
    assert go_duration("336h") == 14 * 24 * 3600
    with pytest.raises(ValueError, match="Go duration"):
        go_duration("60")


def test_manifests_readme_exists() -> None:
    assert (REPO / "manifests" / "README.md").exists()
