"""Hand-made load-run reports for the plot and hint tests (no NATS, no workers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loadgen.run.records import Accounting, LatencySummary, RunConfig, RunReport, TimelinePoint


def point(t: int, arrivals: int = 0, completions: int = 0, **fields: Any) -> TimelinePoint:
    """One second of a timeline; latency fields only where something completed."""
    if completions and "p50_ms" not in fields:
        fields |= {"p50_ms": 100.0 + t, "p90_ms": 200.0 + t, "p99_ms": 300.0 + t}
    return TimelinePoint(t=t, arrivals=arrivals, completions=completions, **fields)


def run_report(
    timeline: list[TimelinePoint] | None = None,
    *,
    function: str = "remove-bg",
    missing: int = 0,
    answered_ok: int = 0,
    rejected: dict[str, int] | None = None,
    **fields: Any,
) -> RunReport:
    """A finished run of `function` with the given accounting and timeline."""
    published = answered_ok + missing
    accounting = Accounting(
        scheduled=published + sum((rejected or {}).values()),
        published=published,
        acknowledged=published,
        rejected=rejected or {},
        answered_ok=answered_ok,
        recovered_from_store=0,
        missing=missing,
    )
    config = RunConfig(
        profile="constant",
        profile_description="constant 5 jobs/s",
        profile_points=[(0.0, 5.0), (4.0, 5.0)],
        function=function,
        nats_url="nats://127.0.0.1:4222",
        seed=1,
        high_fraction=0.0,
        max_jobs=None,
        max_time_s=None,
        drain_timeout_s=30.0,
        payload_bytes=100,
        content_type="image/png",
    )
    return RunReport(
        run_id="lgtest",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        config=config,
        ok=accounting.lost == 0,
        accounting=accounting,
        latency_ms=LatencySummary(),
        generator_lag_ms=LatencySummary(),
        arrival_phase_s=4.0,
        elapsed_s=6.0,
        offered_rate=5.0,
        throughput=1.0,
        timeline=timeline or [],
        **fields,
    )
