"""The manifests agree with the function's settings, endpoints and CLI, and with themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import typer.main

from function.cli import full_app
from function.contract.settings import (
    ADVISORIES_STREAM,
    JOBS_STREAM,
    Priority,
    max_deliveries_subject,
    tenant_stream,
)
from function.http.func import Function
from function.transport.tenants import quota_of, tenant_stream_config
from function.transport.topology import consumer_config, stream_configs, sweeper_config
from tests.manifests import checks, contract, jetstream_checks, nack
from tests.manifests.kube import (
    REPO,
    SECURE_OVERLAYS,
    Doc,
    containers,
    go_duration,
    override_of,
    rendered,
    workloads,
)

Check = Callable[[Sequence[Doc]], list[str]]
# The tenants of manifests/nats/accounts.conf, with streams in components/tenants.
EXAMPLE_TENANTS = ("tenant-a", "tenant-b")


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
    streams, consumers = jetstream_checks.stream_specs(docs), jetstream_checks.consumer_specs(docs)
    tenants = jetstream_checks.declared_tenants(docs)
    for stream in stream_configs(settings):
        spec = streams[str(stream.name)]
        if stream.name == ADVISORIES_STREAM:  # and each tenant stream's advisories
            extra = [max_deliveries_subject("*", tenant_stream(t)) for t in tenants]
            stream.subjects = [*(stream.subjects or []), *extra]
        assert jetstream_checks.stream_differences(spec, stream) == []
    for priority in Priority:
        config = consumer_config(settings, priority)
        spec = consumers[JOBS_STREAM, str(config.durable_name)]
        assert spec["filterSubjects"] == config.filter_subjects
        assert jetstream_checks.consumer_differences(spec, config, JOBS_STREAM) == []
    sweeper = sweeper_config(settings)
    spec = consumers[ADVISORIES_STREAM, str(sweeper.durable_name)]
    assert spec["filterSubjects"] == sweeper.filter_subjects
    assert jetstream_checks.consumer_differences(spec, sweeper, ADVISORIES_STREAM) == []


def test_nack_tenants_match_tenant_streams(overlay: str, docs: tuple[Doc, ...]) -> None:
    """Each tenant's NACK Stream is what `surge tenants add` makes with the quota it
    declares, and its consumers are the worker's for that tenant."""
    settings = checks.worker_settings(docs)
    streams, consumers = jetstream_checks.stream_specs(docs), jetstream_checks.consumer_specs(docs)
    tenants = jetstream_checks.declared_tenants(docs)
    assert tenants == (sorted(EXAMPLE_TENANTS) if overlay in SECURE_OVERLAYS else [])
    for tenant in tenants:
        spec = streams[tenant_stream(tenant)]
        quota = quota_of(nack.stream_config(spec))
        assert quota.max_pending and quota.max_payload and quota.max_rate  # examples of each
        stream = tenant_stream_config(tenant, quota, settings)
        assert (spec["maxMsgs"], spec["maxMsgSize"]) == (stream.max_msgs, stream.max_msg_size)
        assert spec["metadata"] == stream.metadata
        assert spec["discard"] == "new"
        assert jetstream_checks.stream_differences(spec, stream) == []
        for priority in Priority:
            config = consumer_config(settings, priority, tenant)
            spec = consumers[tenant_stream(tenant), str(config.durable_name)]
            assert spec["filterSubjects"] == config.filter_subjects
            assert jetstream_checks.consumer_differences(spec, config, tenant_stream(tenant)) == []


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
