"""What a run cost: GPU-seconds used, starting and idle-but-warm, and the bill.

`Usage` is what a run leaves (the replica timeline, the jobs' `timings.compute_ms`
summed, the measured cold start, when each job arrived); `make_bill` turns it into a
`Bill` at a price per GPU-hour, beside a fixed fleet sized for the peak over the same
window. A replica-second counts as a GPU-second (one GPU per replica).

    bill = make_bill(usage_of(report), price_per_gpu_hour=2.5)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from itertools import pairwise
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from rich.table import Table

if TYPE_CHECKING:  # the embedded stack (and its gRPC) only for the demo's own report
    from scaler.stack import SpikeReport

__all__ = [
    "COMPARISONS_GROUP",
    "DEFAULT_PRICE",
    "Bill",
    "Usage",
    "bill_table",
    "comparisons",
    "make_bill",
    "usage_of",
]

log = logging.getLogger("surge.bill")

DEFAULT_PRICE = 2.50  # dollars per GPU-hour
# Entry points adding rows to a bill: `(usage, bill) -> (name, GPU-seconds, cost) | None`
# (the load generator's "KEDA defaults" comes from its simulator, which this package may
# not import).
COMPARISONS_GROUP = "surge.bill_comparisons"


class Usage(BaseModel):
    """What a run used: its replicas over time and its jobs' compute."""

    timeline: list[tuple[float, int]] = Field(
        description="(seconds, replicas) at each change, in time order; the last ends it."
    )
    compute_s: float = Field(ge=0, description="The jobs' timings.compute_ms summed, in s.")
    cold_start_s: float = Field(ge=0, description="Start to ready of one replica (measured).")
    arrivals_s: list[float] = Field(
        default_factory=list, description="When each job arrived, on the timeline's clock."
    )
    running_before: int = Field(
        default=0,
        ge=0,
        description="Replicas of the first point started before the timeline began (a "
        "run against workers already up): not charged a start.",
    )
    ready_only: bool = Field(
        default=False,
        description="The timeline counts ready replicas only (a load run sees workers by "
        "their heartbeats): each start's cold start is added to it, not carved out of it.",
    )
    jobs: list[tuple[float, float]] = Field(
        default_factory=list,
        description="(when it was answered, its compute in s) per job, on the timeline's "
        "clock: what a time range of the run is billed from.",
    )

    def within(self, start: float, end: float) -> Usage:
        """The usage of the time range [start, end] of the run: replicas as they were
        then (those up at `start` were started before it), the compute of the jobs
        answered in it, the jobs that arrived in it. `ValueError` when the range misses
        the timeline, or the run kept no per-job times to bill its compute from."""
        points = self.timeline
        if not points or end <= start or end <= points[0][0] or start >= points[-1][0]:
            raise ValueError(f"the range {start:g}-{end:g} s misses the run's timeline")
        if self.compute_s > 0 and not self.jobs:
            raise ValueError("this report keeps no per-job times: bill the whole run")
        last = points[-1][0]
        start, end = max(start, points[0][0]), min(end, last)

        def inside(t: float) -> bool:  # [start, end): ranges side by side count each once
            return start <= t < end or t == end == last

        at_start = next((r for t, r in reversed(points) if t <= start), points[0][1])
        changes = [(t, r) for t, r in points if start < t < end]
        jobs = [(t, c) for t, c in self.jobs if inside(t)]
        return Usage(
            timeline=[(start, at_start), *changes, (end, 0)],
            compute_s=sum(c for _, c in jobs),
            cold_start_s=self.cold_start_s,
            arrivals_s=[t for t in self.arrivals_s if inside(t)],
            running_before=at_start if start > points[0][0] else self.running_before,
            ready_only=self.ready_only,
            jobs=jobs,
        )


class Bill(BaseModel):
    """GPU-seconds by kind and what they cost, beside a fixed fleet for the peak."""

    price_per_gpu_hour: float
    window_s: float = Field(description="From the timeline's first point to its last.")
    replica_s: float = Field(description="Replica-seconds: used + starting + idle.")
    used_s: float = Field(description="The jobs' compute (their batch shares and pre/post).")
    starting_s: float = Field(description="Replica starts x the measured cold start.")
    idle_s: float = Field(description="Ready with no job running.")
    starts: int
    cost: float
    fixed_replicas: int = Field(description="A fixed fleet sized for the peak.")
    fixed_s: float
    fixed_cost: float


def _price(seconds: float, price_per_gpu_hour: float) -> float:
    return seconds / 3600 * price_per_gpu_hour


def make_bill(usage: Usage, price_per_gpu_hour: float = DEFAULT_PRICE) -> Bill:
    """Split the timeline's replica-seconds into used, starting and idle, and price them."""
    points = usage.timeline
    replica_s = sum(r * (t1 - t0) for (t0, r), (t1, _) in pairwise(points))
    starts = sum(max(b - a, 0) for (_, a), (_, b) in pairwise(points))
    starts += max(points[0][1] - usage.running_before, 0) if points else 0
    # Starts are measured wall time; compute shares of runners that ran side by side on
    # one replica overlap, so what they add up to is capped by the replica-seconds left.
    if usage.ready_only:  # the starts happened before the timeline saw them: add them
        starting = starts * usage.cold_start_s
        replica_s += starting
    else:
        starting = min(starts * usage.cold_start_s, replica_s)
    used = min(usage.compute_s, replica_s - starting)
    window = points[-1][0] - points[0][0] if points else 0.0
    peak = max((r for _, r in points), default=0)
    return Bill(
        price_per_gpu_hour=price_per_gpu_hour,
        window_s=window,
        replica_s=replica_s,
        used_s=used,
        starting_s=starting,
        idle_s=max(replica_s - used - starting, 0.0),
        starts=starts,
        cost=_price(replica_s, price_per_gpu_hour),
        fixed_replicas=peak,
        fixed_s=peak * window,
        fixed_cost=_price(peak * window, price_per_gpu_hour),
    )


def usage_of(report: SpikeReport) -> Usage:
    """A spike demo's usage: arrivals from each result's finish less its total time,
    placed at the first moment the timeline shows a backlog."""
    results = list(report.results.values())
    arrived = [r.finished_at.timestamp() - r.timings.total_ms / 1000 for r in results]
    anchor = next((t for t, _, backlog in report.timeline if backlog), 0.0)
    first = min(arrived, default=0.0)
    done = [anchor + r.finished_at.timestamp() - first for r in results]
    return Usage(
        timeline=[(t, replicas) for t, replicas, _ in report.timeline],
        compute_s=sum(r.timings.compute_ms for r in results) / 1000,
        cold_start_s=report.cold_start_s or 0.0,
        arrivals_s=sorted(anchor + a - first for a in arrived),
        jobs=sorted(zip(done, (r.timings.compute_ms / 1000 for r in results), strict=True)),
    )


def comparisons(usage: Usage, bill: Bill) -> dict[str, tuple[float, float]]:
    """Rows from every installed `surge.bill_comparisons` entry point; one that cannot
    be loaded (its extra is not installed) or has nothing to say adds none."""
    rows: dict[str, tuple[float, float]] = {}
    for entry in entry_points(group=COMPARISONS_GROUP):
        try:
            row: Callable[[Usage, Bill], tuple[str, float, float] | None] = entry.load()
        except ImportError as exc:
            log.info("bill comparison %s not available: %s", entry.name, exc)
            continue
        found = row(usage, bill)
        if found is not None:
            name, seconds, cost = found
            rows[name] = (seconds, cost)
    return rows


def bill_table(bill: Bill, others: dict[str, tuple[float, float]] | None = None) -> Table:
    """The bill as a table; `others` adds rows: name -> (GPU-seconds, cost)."""
    table = Table(title=f"What it cost at ${bill.price_per_gpu_hour:g}/GPU-hour")
    table.add_column("")
    table.add_column("GPU-seconds", justify="right")
    table.add_column("cost ($)", justify="right")
    rows = [
        ("used (jobs' compute)", bill.used_s, None),
        (f"starting ({bill.starts} cold starts)", bill.starting_s, None),
        ("idle but warm", bill.idle_s, None),
        ("Surge, this run", bill.replica_s, bill.cost),
        (f"fixed fleet: {bill.fixed_replicas} x {bill.window_s:.0f} s", bill.fixed_s, None),
    ]
    for name, seconds, cost in rows:
        shown = cost if cost is not None else _price(seconds, bill.price_per_gpu_hour)
        table.add_row(name, f"{seconds:.1f}", f"{shown:.4f}")
    for name, (seconds, cost) in (others or {}).items():
        table.add_row(name, f"{seconds:.1f}", f"{cost:.4f}")
    return table
