"""From a finished run's ledger and 1 s samples to the `RunReport` and its timeline."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from loadgen.run.ledger import Ledger, summarize
from loadgen.run.records import RunConfig, RunReport, TimelinePoint
from scaler.bill import Usage

__all__ = ["build_report", "build_timeline"]


def _per_second(times: np.ndarray, seconds: int) -> np.ndarray:
    valid = times[~np.isnan(times)]
    bins = np.clip(np.floor(valid).astype(int), 0, seconds - 1)
    return np.bincount(bins, minlength=seconds)


def build_timeline(
    ledger: Ledger, samples: list[tuple[int, int | None, int | None]], seconds: int
) -> list[TimelinePoint]:
    """One point per second: arrivals, completions, latency of those completions, and
    the backlog/replicas sample taken at the second's end."""
    sent = np.asarray(ledger.sent, dtype=float)
    answered = np.asarray(ledger.answered, dtype=float)
    scheduled = np.asarray(ledger.scheduled, dtype=float)
    arrivals = _per_second(sent, seconds)
    completions = _per_second(answered, seconds)
    done = ~np.isnan(answered)
    bins = np.clip(np.floor(answered[done]).astype(int), 0, seconds - 1)
    latency = (answered[done] - scheduled[done]) * 1000.0
    order = np.argsort(bins, kind="stable")
    bins, latency = bins[order], latency[order]
    edges = np.searchsorted(bins, np.arange(seconds + 1))
    at_end = {second - 1: (backlog, replicas) for second, backlog, replicas in samples}
    points = []
    for t in range(seconds):
        chunk = latency[edges[t] : edges[t + 1]]
        p50 = p90 = p99 = None
        if chunk.size:
            p50, p90, p99 = (float(v) for v in np.percentile(chunk, [50, 90, 99]))
        backlog, replicas = at_end.get(t, (None, None))
        points.append(
            TimelinePoint(
                t=t,
                arrivals=int(arrivals[t]),
                completions=int(completions[t]),
                backlog=backlog,
                replicas=replicas,
                p50_ms=p50,
                p90_ms=p90,
                p99_ms=p99,
            )
        )
    return points


def build_report(
    ledger: Ledger,
    samples: list[tuple[int, int | None, int | None]],
    *,
    config: RunConfig,
    started_at: datetime,
    arrival_phase_s: float,
    elapsed_s: float,
    workers_seen: int,
    workers_ready_seen: int = 0,
    other_functions_seen: dict[str, int] | None = None,
    cold_start_s: float | None = None,
    running_before: int = 0,
) -> RunReport:
    """The report of a finished run."""
    accounting = ledger.accounting()
    seconds = max(math.ceil(elapsed_s), max((s for s, _, _ in samples), default=0), 1)
    timeline = build_timeline(ledger, samples, seconds)
    backlogs = [p.backlog for p in timeline if p.backlog is not None]
    replicas = [p.replicas for p in timeline if p.replicas is not None]
    queued = np.asarray(ledger.queued_ms, dtype=float)
    return RunReport(
        run_id=ledger.run_id,
        started_at=started_at,
        config=config,
        ok=accounting.lost == 0,
        accounting=accounting,
        latency_ms=summarize(ledger.latencies_ms()),
        generator_lag_ms=summarize(ledger.lag_ms()),
        server_queued_ms=summarize(queued[~np.isnan(queued)]),
        arrival_phase_s=arrival_phase_s,
        elapsed_s=elapsed_s,
        offered_rate=accounting.scheduled / arrival_phase_s if arrival_phase_s > 0 else 0.0,
        throughput=accounting.answered / elapsed_s if elapsed_s > 0 else 0.0,
        peak_backlog=max(backlogs) if backlogs else None,
        peak_replicas=max(replicas) if replicas else None,
        replica_seconds=float(sum(replicas)) if replicas else None,
        workers_seen=workers_seen,
        workers_ready_seen=workers_ready_seen,
        other_functions_seen=other_functions_seen or {},
        timeline=timeline,
        usage=usage_of_run(ledger, timeline, cold_start_s, running_before),
    )


def usage_of_run(
    ledger: Ledger,
    timeline: list[TimelinePoint],
    cold_start_s: float | None,
    running_before: int = 0,
) -> Usage | None:
    """The run's `Usage` (see `scaler.bill`): replicas as sampled at each second's end,
    held through that second (`running_before` of them were up before the run); None
    when replicas were never seen."""
    if not any(p.replicas is not None for p in timeline):
        return None
    changes: list[tuple[float, int]] = []
    replicas = 0
    for point in timeline:
        if point.replicas is not None:  # a second not sampled keeps the last count
            replicas = point.replicas
        if not changes or changes[-1][1] != replicas:
            changes.append((float(point.t), replicas))
    changes.append((float(len(timeline)), 0))  # the window ends with the run
    compute = np.asarray(ledger.compute_ms, dtype=float)
    sent = np.asarray(ledger.sent, dtype=float)
    answered = np.asarray(ledger.answered, dtype=float)
    timed = ~np.isnan(compute)  # a result's compute is noted when it is answered
    jobs = [
        (float(t), float(c) / 1000) for t, c in zip(answered[timed], compute[timed], strict=True)
    ]
    return Usage(
        timeline=changes,
        compute_s=sum(c for _, c in jobs),
        cold_start_s=cold_start_s or 0.0,
        arrivals_s=[float(t) for t in sent[~np.isnan(sent)]],
        running_before=min(running_before, changes[0][1]),
        ready_only=True,  # replicas are the workers ready by their heartbeats
        jobs=jobs,
    )
