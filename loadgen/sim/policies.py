"""Scaling policies: KEDA + HPA (lag or Surge demand), a fixed fleet, and an oracle.

`KedaHpa` models the two controllers a ScaledObject drives:

* KEDA's operator polls the trigger every `pollingInterval`: active (lag above the
  activation threshold) at zero replicas scales to one; inactive for `cooldownPeriod`
  scales to zero. With `external-push`, activation follows the first job within
  `push_latency_s` instead of waiting for the poll.
* The HPA, from one replica up, syncs every `hpa_sync_s`: desired = ceil(metric /
  target) (AverageValue), within the tolerance, rate-limited by the scale-up policy
  (max of pods and percent per period) and, going down, by the stabilization window
  (the highest recommendation in it wins) and the scale-down policy.

The metric is the lag (`num_pending + num_ack_pending`, target `lagThreshold` per
replica) or Surge's demand: the replicas that keep up with the arrival rate and drain
the backlog expected after one cold start within `drain_target_s`, counting the
replicas already starting (target 1 per replica).
"""

from __future__ import annotations

import math
import random
from collections import deque

import numpy as np

from loadgen.sim.engine import Fleet, Trace
from loadgen.sim.params import Autoscaler, ColdStart, ServiceModel, ceil_div

__all__ = ["KedaHpa", "Oracle", "Static", "surge_demand"]


def surge_demand(
    rate: float,
    backlog: float,
    fleet: Fleet,
    t: float,
    service: ServiceModel,
    drain_target_s: float,
) -> int:
    """Replicas to keep up with `rate` and drain the backlog one cold start from now."""
    mu = service.max_throughput
    lead = fleet.cold_start
    horizon = t + lead
    future_service = sum(mu * max(horizon - max(ready, t), 0.0) for ready in fleet.ready_at)
    expected = max(backlog + rate * lead - future_service, 0.0)
    if rate <= 0 and backlog <= 0:
        return 0
    return max(math.ceil(rate / mu + expected / (mu * drain_target_s) - 1e-9), 1)


class KedaHpa:
    """KEDA activation/cooldown plus HPA syncs for one `Autoscaler` configuration."""

    def __init__(
        self,
        config: Autoscaler,
        trace: Trace,
        service: ServiceModel,
        *,
        seed: int,
        campaign: tuple[float, float, int] | None = None,
        phases: tuple[float, float] | None = None,
    ) -> None:
        self.c = config
        self.trace = trace
        self.service = service
        rng = random.Random(seed)
        poll_phase, sync_phase = phases or (
            rng.uniform(0, config.polling_interval_s),
            rng.uniform(0, config.hpa_sync_s),
        )
        self.next_poll = poll_phase
        self.next_sync = sync_phase
        self.last_active = 0.0
        self.push_at: float | None = None
        self.recommendations: deque[tuple[float, int]] = deque()
        self.campaign = campaign

    def _floor(self, t: float) -> int:
        """The pre-warm floor: the campaign's replicas from one lead time before it."""
        if not (self.c.prewarm and self.campaign):
            return 0
        start, end, replicas = self.campaign
        return replicas if start <= t <= end else 0

    def _metric(self, tick: int, t: float, lag: float, fleet: Fleet) -> tuple[float, float]:
        """(metric value, target per replica) as the HPA would read them now."""
        if not self.c.demand:
            return lag, self.c.lag_threshold
        rate = self.trace.rate(tick, self.c.rate_window_s)
        demand = surge_demand(rate, lag, fleet, t, self.service, self.c.drain_target_s)
        return float(max(demand, self._floor(t))), 1.0

    def _active(self, tick: int, t: float, lag: float, fleet: Fleet) -> bool:
        if self.c.demand:
            return self._metric(tick, t, lag, fleet)[0] > 0 or lag > self.c.activation_lag
        return lag > self.c.activation_lag

    def step(self, tick: int, t: float, lag: float, fleet: Fleet) -> None:
        c = self.c
        if c.push and (self.trace.per_tick[tick] > 0 or self._floor(t)):
            self.last_active = t
            if fleet.size == 0 and self.push_at is None:
                self.push_at = t + c.push_latency_s
        if self.push_at is not None and t + 1e-9 >= self.push_at:
            self.push_at = None
            if fleet.size == 0:
                fleet.scale_to(max(c.min_replicas, 1), t)
        if t + 1e-9 >= self.next_poll:
            self.next_poll += c.polling_interval_s
            if self._active(tick, t, lag, fleet):
                self.last_active = t
                if fleet.size == 0:
                    fleet.scale_to(max(c.min_replicas, 1), t)
            elif fleet.size and c.min_replicas == 0 and t - self.last_active >= c.cooldown_s:
                fleet.scale_to(0, t)
                self.recommendations.clear()
        if t + 1e-9 >= self.next_sync:
            self.next_sync += c.hpa_sync_s
            if fleet.size:
                fleet.scale_to(self._hpa(tick, t, lag, fleet), t)

    def _hpa(self, tick: int, t: float, lag: float, fleet: Fleet) -> int:
        c, current = self.c, fleet.size
        metric, target = self._metric(tick, t, lag, fleet)
        if abs(metric / (target * current) - 1) <= c.tolerance:
            raw = current
        else:
            raw = ceil_div(metric, target)
        raw = min(max(raw, c.min_replicas, 1), c.max_replicas)
        self.recommendations.append((t, raw))
        while self.recommendations and self.recommendations[0][0] < t - c.down_window_s:
            self.recommendations.popleft()
        if raw > current:
            limit = max(current + c.up_pods, math.floor(current * (1 + c.up_percent / 100)))
            return min(raw, limit)
        desired = max(r for _, r in self.recommendations) if self.recommendations else raw
        desired = min(desired, current)
        step = max(c.down_pods, math.ceil(current * c.down_percent / 100))
        return max(desired, current - step) if step else current


class Static:
    """A fixed fleet: nothing to decide (replicas are made ready by the engine)."""

    def step(self, tick: int, t: float, lag: float, fleet: Fleet) -> None:
        return None


class Oracle:
    """Knows every future arrival: each replica is requested exactly one cold start
    before the second it is needed, and removed as soon as no second within the next
    cold start needs it."""

    def __init__(self, trace: Trace, service: ServiceModel, cold: ColdStart) -> None:
        arrivals = trace.per_second()
        self.needed = np.ceil(arrivals / service.max_throughput - 1e-9).astype(int)
        self.lead = math.ceil(cold.total)
        self.mu = service.max_throughput
        padded = np.concatenate([self.needed, np.zeros(self.lead + 1, dtype=int)])
        self.plan = [int(padded[s : s + self.lead + 1].max()) for s in range(len(self.needed))]

    def _prelude(self, fleet: Fleet) -> None:
        """Replicas needed within the first cold start were requested before time zero."""
        for second in range(min(self.lead, len(self.needed))):
            while fleet.size < self.needed[second]:
                fleet.add_starting(float(second))

    def step(self, tick: int, t: float, lag: float, fleet: Fleet) -> None:
        if tick == 0:
            self._prelude(fleet)
        second = min(int(t + 1e-9), len(self.plan) - 1)
        want = self.plan[second]
        if want < fleet.size and lag > want * self.mu:
            want = fleet.size  # fewer replicas could not clear the backlog within a second
        if want != fleet.size:
            fleet.scale_to(want, t)


def campaign_plan(
    points: list[tuple[float, float]],
    service: ServiceModel,
    cold: ColdStart,
    config: Autoscaler,
) -> tuple[float, float, int]:
    """(floor start, floor end, replicas) for a campaign known in advance: from the start
    of the rise to the last point at half the peak or more, started one lead time early."""
    peak = max(r for _, r in points)
    above = [i for i, (_, r) in enumerate(points) if r >= peak / 2]
    if not above or peak <= 0:
        return (0.0, 0.0, 0)
    rise = points[max(above[0] - 1, 0)][0]
    lead = cold.total + config.hpa_sync_s + config.polling_interval_s + config.push_latency_s
    replicas = min(ceil_div(peak, service.max_throughput), config.max_replicas)
    return (rise - lead, points[above[-1]][0], replicas)
