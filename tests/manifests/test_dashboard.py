"""The Grafana dashboard (manifests/observability/grafana-dashboard.json) queries only
metrics that the worker and the scaler export, and covers what an operator watches.

The exported names come from the real collectors (`function.telemetry.METRICS`,
`scaler.metrics.SCALER_METRICS`), with the suffixes Prometheus adds: counters
`_total`/`_created`, histograms `_bucket`/`_sum`/`_count`/`_created`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from function.telemetry import METRICS
from scaler.metrics import SCALER_METRICS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "manifests" / "observability" / "grafana-dashboard.json"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}

# PromQL's functions and aggregations that a query may call (a misspelt one fails).
FUNCTIONS = {
    "abs",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "group",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "label_values",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "stddev",
    "sum",
    "sum_over_time",
    "time",
    "topk",
    "vector",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def exported_names() -> set[str]:
    """Every series name the worker's and the scaler's collectors can expose."""
    names: set[str] = set()
    for owner in (METRICS, SCALER_METRICS):
        for collector in vars(owner).values():
            if not isinstance(collector, MetricWrapperBase):
                continue
            for family in collector.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads; raises on an unknown function."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers (and ${var} in them)
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables elsewhere
    clause = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(clause, " ", text)  # label lists
    text = re.sub(r"\b(label_values\([^,()]*),\s*\w+\s*\)", r"\1)", text)  # Grafana's
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]*", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word, call = match.group(0).rstrip("( \t"), match.group(1)
        if call:
            if word not in FUNCTIONS:
                raise ValueError(f"unknown PromQL function {word!r} in {expr!r}")
        elif word.lower() not in KEYWORDS:
            names.add(word)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield (
                f"variable {variable['name']}",
                query["query"] if isinstance(query, dict) else query,
            )


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    queries = list(_queries(dashboard))
    assert len(queries) > 20
    unknown = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where} reads no metric: {expr}"
        if names - exported:
            unknown[where] = sorted(names - exported)
    assert unknown == {}


def test_the_checker_catches_what_prometheus_would_not_find() -> None:
    exported = exported_names()
    assert {"surge_jobs_total", "surge_jobs_created", "surge_batch_size_bucket"} <= exported
    assert {"surge_scaler_pending_jobs", "surge_scaler_polls_total"} <= exported
    assert "surge_jobs" not in exported and "surge_ready_total" not in exported
    expr = 'histogram_quantile(0.99, sum by (le, function) (rate(x_bucket{a="b,c"}[5m])))'
    assert metric_names(expr) == {"x_bucket"}
    assert metric_names("rate(surge_jobs[$__rate_interval]) > 1e3 offset 5m") == {"surge_jobs"}
    assert metric_names("a / on (pod) group_left (node) b:rule") == {"a", "b:rule"}
    assert metric_names('label_values(surge_ready{function="x"}, function)') == {"surge_ready"}
    with pytest.raises(ValueError, match="rat"):
        metric_names("rat(surge_jobs_total[5m])")


def test_the_dashboard_covers_what_an_operator_watches(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in _queries(dashboard)))
    wanted = {
        "surge_scaler_pending_jobs",  # queue depth
        "surge_scaler_ack_pending_jobs",
        "surge_jobs_total",  # jobs/s by status
        "surge_job_latency_seconds_bucket",  # latency quantiles
        "surge_job_queue_wait_seconds_bucket",  # queue-wait quantiles
        "surge_batch_size_sum",  # batch size
        "surge_jobs_in_flight",
        "surge_ready",  # replicas / ready workers
        "surge_scaler_workers",
        "surge_scaler_replica_demand",
        "surge_cold_start_phase_seconds",  # cold starts
        "surge_tenant_jobs_total",  # per tenant
        "surge_tenant_compute_seconds_total",
    }
    assert wanted - used == set()


def test_the_dashboard_imports_cleanly(dashboard: dict[str, Any]) -> None:
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
