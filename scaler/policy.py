"""Replica demand: how many replicas drain the backlog within a target time.

Pure functions on numbers (no I/O, no clock). The watcher measures, `decide()` decides,
and the KEDA servicer and the local orchestrator both consume the same `Decision`::

    demand = λ/μ + max(B + λ·L - μ·Σ min(aᵢ, L), 0) / (μ·T)
             at least 1 while active, 0 while not, at most max_replicas

    B  backlog: num_pending + num_ack_pending over both priorities, less retrying jobs
    λ  arrival rate (jobs/s) over the last few seconds
    μ  one replica's throughput (jobs/s), measured from heartbeats while a backlog waited
    L  cold-start lead time (s): the slowest of the recent measured cold starts
    T  target drain time (s)
    aᵢ how long warming replica i has been starting (s), from its heartbeats

λ/μ replicas keep up with arrivals; the rest clear the backlog expected when a replica
asked for now is ready (today's, plus what arrives while it starts, less what replicas
already warming serve before then: replica i is ready within L - aᵢ and serves
μ·min(aᵢ, L) by then) within T. Without that credit every look during a cold start
would ask again for the jobs that arrived while the first replicas started. KEDA serves
`demand` against a target of 1, so the HPA's `ceil(metric / target)` is
`Decision.replicas`.

Retrying jobs are ack-pending jobs that were delivered more than once
(`min(num_redelivered, num_ack_pending)`: JetStream leaves `num_redelivered` behind for
a message it gave up on). More replicas do not help a job that keeps failing, so they
never add capacity demand; alone they keep the function active for `poison_hold_s`,
then stop holding replicas (their redeliveries do not count as arrivals). A job past
`max_deliver` leaves `num_ack_pending` at the next delivery attempt, and one on the
dead-letter stream has left the consumer.

The function is active while it has a backlog, while jobs keep arriving (at least
`active_rate` jobs/s: a trickle drained between two looks is still traffic), during a
pre-warm window, or while retrying jobs are held.

Pre-warm windows raise demand to the campaign's replicas from `start - (L + margin)`
until the window ends, so replicas are warm when the campaign starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Decision", "Observation", "Policy", "Reason", "Window", "decide", "prewarm_demand"]


class Reason(StrEnum):
    """Why the function is active (or not)."""

    IDLE = "idle"
    BACKLOG = "backlog"
    ARRIVALS = "arrivals"
    RETRYING = "retrying"
    PREWARM = "prewarm"


@dataclass(frozen=True)
class Policy:
    """Knobs (from the ScaledObject's metadata, or `surge up` options)."""

    target_drain_s: float = 10.0
    default_throughput: float = 1.0
    default_cold_start_s: float = 30.0
    prewarm_margin_s: float = 5.0
    poison_hold_s: float = 120.0
    active_rate: float = 0.1
    max_replicas: int | None = None


@dataclass(frozen=True)
class Observation:
    """What the watcher saw at one moment (sums over both priorities)."""

    pending: int = 0
    ack_pending: int = 0
    retrying: int = 0
    retrying_for_s: float = 0.0
    arrival_rate: float = 0.0
    throughput: float | None = None
    cold_start_s: float | None = None
    warming_s: tuple[float, ...] = ()
    """How long each warming replica has been starting (s)."""


@dataclass(frozen=True)
class Window:
    """A pre-warm window in Unix seconds: `replicas`, or enough for `rate` jobs/s."""

    start: float
    end: float
    rate: float = 0.0
    replicas: int = 0


@dataclass(frozen=True)
class Decision:
    """Replica demand (a float for KEDA), the replicas it means, and why."""

    demand: float
    replicas: int
    active: bool
    reason: Reason
    backlog: int
    throughput: float
    lead_s: float


def prewarm_demand(windows: tuple[Window, ...], now: float, lead_s: float, mu: float) -> float:
    """Replicas the pre-warm windows ask for at `now` (0 outside every window)."""
    demand = 0.0
    for window in windows:
        if window.start - lead_s <= now < window.end:
            wanted = max(float(window.replicas), window.rate / mu)
            demand = max(demand, wanted)
    return demand


def decide(
    obs: Observation, policy: Policy, windows: tuple[Window, ...] = (), now: float = 0.0
) -> Decision:
    """The replica demand for `obs` under `policy` (see the module docstring)."""
    mu = obs.throughput if obs.throughput and obs.throughput > 0 else policy.default_throughput
    cold = obs.cold_start_s if obs.cold_start_s is not None else policy.default_cold_start_s
    lead = max(cold, 0.0)
    retrying = max(0, min(obs.retrying, obs.ack_pending))
    backlog = max(0, obs.pending + obs.ack_pending - retrying)
    rate = max(obs.arrival_rate, 0.0)
    target = max(policy.target_drain_s, 1e-3)

    coming = mu * sum(min(max(age, 0.0), lead) for age in obs.warming_s)
    expected = max(backlog + rate * lead - coming, 0.0)
    demand = rate / mu + expected / (mu * target)
    early = prewarm_demand(windows, now, lead + policy.prewarm_margin_s, mu)
    held = retrying > 0 and obs.retrying_for_s < policy.poison_hold_s

    if backlog > 0:
        reason = Reason.BACKLOG
    elif early > 0:
        reason = Reason.PREWARM
    elif retrying > 0:
        # the arrival counter also counts redeliveries: here they are the retries themselves
        reason = Reason.RETRYING if held else Reason.IDLE
    elif rate >= policy.active_rate:
        reason = Reason.ARRIVALS
    else:
        reason = Reason.IDLE
    active = reason is not Reason.IDLE
    demand = max(demand, early, 1.0) if active else 0.0
    if policy.max_replicas is not None:
        demand = min(demand, float(policy.max_replicas))
    replicas = math.ceil(demand - 1e-9) if demand > 0 else 0
    return Decision(
        demand=demand,
        replicas=replicas,
        active=active,
        reason=reason,
        backlog=backlog,
        throughput=mu,
        lead_s=lead,
    )
