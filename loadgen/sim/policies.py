"""Scaling policies: KEDA + HPA (lag and/or Surge's scaler), a fixed fleet, an oracle.

`KedaHpa` models the controllers a ScaledObject drives:

* KEDA's operator polls the triggers every `pollingInterval`: any trigger active at
  zero replicas scales to one; none active for `cooldownPeriod` scales to zero. Surge's
  `external-push` trigger pushes "active" when the scaler sees it (the watcher looks
  every 100 ms), and KEDA scales from zero `push_latency_s` after.
* The HPA, from one replica up, syncs every `hpa_sync_s` (`loadgen.sim.hpa`): the lag
  (`num_pending + num_ack_pending`) against `lagThreshold`, and Surge's replica demand
  against 1, the larger winning, within `behavior`.

Surge's trigger is `scaler.policy.decide()` itself, on an `Observation` of the simulated
state: the backlog, the arrival rate from `scaler.estimate.ArrivalRate` fed the arrival
counter every watcher poll, the per-replica throughput and cold start the heartbeats
would have measured, and the replicas whose worker process is up but not yet ready.
A pre-warm plan is a `scaler.policy.Window`, as `surge prewarm` stores it.
"""

from __future__ import annotations

import bisect
import math
import random

import numpy as np

from loadgen.sim.engine import EPS, Fleet, Trace
from loadgen.sim.hpa import Hpa, proposal
from loadgen.sim.params import Autoscaler, ColdStart, ServiceModel
from scaler.config import ScalerSettings
from scaler.estimate import ArrivalRate
from scaler.policy import Decision, Observation, Window, decide

__all__ = ["WATCH_S", "KedaHpa", "Oracle", "Static", "campaign_window"]

WATCH_S = float(ScalerSettings.model_fields["poll_interval_s"].default)
"""How often the scaler's watcher looks at the consumers (`SURGE_SCALER_POLL_INTERVAL_S`)."""


class KedaHpa:
    """KEDA activation/cooldown plus HPA syncs for one `Autoscaler` configuration."""

    def __init__(
        self,
        config: Autoscaler,
        trace: Trace,
        service: ServiceModel,
        cold: ColdStart,
        *,
        seed: int,
        lead_s: float,
        windows: tuple[Window, ...] = (),
        phases: tuple[float, float] | None = None,
    ) -> None:
        self.c = config
        self.trace = trace
        self.mu = service.max_throughput
        self.lead_s = lead_s
        self.process_s = cold.process_s
        self.policy = config.push.policy() if config.push is not None else None
        self.windows = windows if config.prewarm else ()
        rng = random.Random(seed)
        poll_phase, sync_phase = phases or (
            rng.uniform(0, config.polling_interval_s),
            rng.uniform(0, config.hpa_sync_s),
        )
        self.next_poll = poll_phase
        self.next_sync = sync_phase
        self.next_watch = 0.0
        self.last_active = 0.0
        self.push_at: float | None = None
        self.arrivals = ArrivalRate()
        self.hpa = Hpa(config)
        self._decided: tuple[int, Decision] | None = None

    def observation(self, t: float, lag: float, fleet: Fleet) -> Observation:
        """What the scaler's watcher would report at `t`."""
        ready_at = fleet.ready_at
        up = bisect.bisect_right(ready_at, t + EPS)
        starting = bisect.bisect_right(ready_at, t + self.process_s + EPS)
        warming = tuple(self.process_s - (r - t) for r in ready_at[up:starting])
        return Observation(
            pending=math.ceil(lag - 1e-6) if lag > 1e-6 else 0,
            arrival_rate=self.arrivals.rate(t),
            throughput=self.mu,
            cold_start_s=self.lead_s,
            warming_s=warming,
        )

    def _decision(self, tick: int, t: float, lag: float, fleet: Fleet) -> Decision:
        if self._decided is None or self._decided[0] != tick:
            assert self.policy is not None
            obs = self.observation(t, lag, fleet)
            self._decided = (tick, decide(obs, self.policy, self.windows, now=t))
        return self._decided[1]

    def _active(self, tick: int, t: float, lag: float, fleet: Fleet) -> bool:
        if self.c.lag_trigger and lag > self.c.activation_lag:
            return True
        return self.policy is not None and self._decision(tick, t, lag, fleet).active

    def step(self, tick: int, t: float, lag: float, fleet: Fleet) -> None:
        c = self.c
        if self.policy is not None and t + EPS >= self.next_watch:
            self.next_watch += WATCH_S
            self.arrivals.add(t, int(self.trace.cumulative[tick + 1] + 1e-6))
            idle = fleet.size == 0 and self.push_at is None
            if idle and self._decision(tick, t, lag, fleet).active:
                self.push_at = t + c.push_latency_s
        if self.push_at is not None and t + EPS >= self.push_at:
            self.push_at = None
            self.last_active = t
            if fleet.size == 0:
                fleet.scale_to(max(c.min_replicas, 1), t)
        if t + EPS >= self.next_poll:
            self.next_poll += c.polling_interval_s
            if self._active(tick, t, lag, fleet):
                self.last_active = t
                if fleet.size == 0:
                    fleet.scale_to(max(c.min_replicas, 1), t)
            elif fleet.size and c.min_replicas == 0 and t - self.last_active >= c.cooldown_s:
                fleet.scale_to(0, t)
                self.hpa.reset()
        if t + EPS >= self.next_sync:
            self.next_sync += c.hpa_sync_s
            if fleet.size:
                fleet.scale_to(
                    self.hpa.desired(t, fleet.size, self._proposals(tick, t, lag, fleet)), t
                )

    def _proposals(self, tick: int, t: float, lag: float, fleet: Fleet) -> list[int]:
        """Replicas each metric asks for: the lag per lagThreshold, Surge's demand per 1."""
        c, current = self.c, fleet.size
        found = []
        if c.lag_trigger:
            found.append(proposal(lag, c.lag_threshold, current, c.tolerance))
        if self.policy is not None:
            demand = self._decision(tick, t, lag, fleet).demand
            found.append(proposal(demand, 1.0, current, c.tolerance))
        return found


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


def campaign_window(points: list[tuple[float, float]]) -> Window:
    """The plan an operator stores for a campaign known in advance (`surge prewarm --at
    RISE --rate PEAK --for ...`): from the start of the rise to the last point at half
    the peak or more, at the peak rate."""
    peak = max(r for _, r in points)
    above = [i for i, (_, r) in enumerate(points) if r >= peak / 2]
    if not above or peak <= 0:
        return Window(start=0.0, end=0.0)
    rise = points[max(above[0] - 1, 0)][0]
    return Window(start=rise, end=points[above[-1]][0], rate=peak)
