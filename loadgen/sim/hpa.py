"""The HPA's replica count at one sync, as Kubernetes computes it (autoscaling/v2).

Per metric, `ceil(value / target)` (AverageValue), or the current count while the
ratio is within the tolerance; the largest wins. Then `behavior`:

* stabilization: a rise takes the lowest recommendation of the scale-up window, a fall
  the highest of the scale-down window (every sync's recommendation is kept);
* rate limits: from the replicas at the start of each policy's period (now, less what
  the HPA added in it, plus what it removed), a `Pods` policy allows `value` more (or
  fewer), a `Percent` policy `value` % more (rounded up) or fewer (rounded down);
  `selectPolicy` Max takes the policy allowing the largest change, Min the smallest;
* then minReplicas (at least 1: KEDA owns 0) and maxReplicas.
"""

from __future__ import annotations

import math
from collections import deque

from loadgen.sim.params import Autoscaler, ScaleRules

__all__ = ["Hpa", "proposal"]


def proposal(value: float, target: float, current: int, tolerance: float) -> int:
    """Replicas one AverageValue metric asks for."""
    if current and abs(value / (target * current) - 1) <= tolerance:
        return current
    return max(math.ceil(value / target - 1e-9), 0)


class Hpa:
    """One HorizontalPodAutoscaler: its recommendations and its scale events."""

    def __init__(self, config: Autoscaler) -> None:
        self.c = config
        self.recommendations: deque[tuple[float, int]] = deque()
        self.events: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """KEDA scaled the target to zero: the HPA starts afresh."""
        self.recommendations.clear()
        self.events.clear()

    def _changed(self, t: float, period_s: float) -> tuple[int, int]:
        """(replicas added, replicas removed) by the HPA within `period_s` before `t`."""
        added = sum(d for when, d in self.events if when > t - period_s and d > 0)
        removed = sum(-d for when, d in self.events if when > t - period_s and d < 0)
        return added, removed

    def _limit(self, t: float, current: int, rules: ScaleRules, up: bool) -> int:
        """The most (scaling up) or fewest (down) replicas the policies allow now."""
        if rules.select == "Disabled":
            return current
        allowed = []
        for policy in rules.policies:
            added, removed = self._changed(t, policy.period_s)
            start = current - added + removed
            if policy.kind == "Pods":
                allowed.append(start + policy.value if up else start - policy.value)
            elif up:
                allowed.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                allowed.append(int(start * (1 - policy.value / 100)))
        most_change = max if up else min
        least_change = min if up else max
        return (least_change if rules.select == "Min" else most_change)(allowed)

    def desired(self, t: float, current: int, proposals: list[int]) -> int:
        """The replica count for this sync (records the change as a scale event)."""
        c = self.c
        raw = max(proposals, default=current)
        past = [(when, r) for when, r in self.recommendations]
        up = min([raw] + [r for when, r in past if when > t - c.scale_up.window_s])
        down = max([raw] + [r for when, r in past if when > t - c.scale_down.window_s])
        self.recommendations.append((t, raw))
        keep = max(c.scale_up.window_s, c.scale_down.window_s)
        while self.recommendations and self.recommendations[0][0] <= t - keep:
            self.recommendations.popleft()
        wanted = min(max(current, up), down)
        floor, ceiling = max(c.min_replicas, 1), c.max_replicas
        if wanted > current:
            wanted = min(wanted, max(self._limit(t, current, c.scale_up, up=True), current))
        elif wanted < current:
            wanted = max(wanted, min(self._limit(t, current, c.scale_down, up=False), current))
        wanted = min(max(wanted, floor), ceiling)
        if wanted != current:
            self.events.append((t, wanted - current))
        periods = [p.period_s for p in (*c.scale_up.policies, *c.scale_down.policies)]
        while self.events and self.events[0][0] <= t - max(periods):
            self.events.popleft()
        return wanted
