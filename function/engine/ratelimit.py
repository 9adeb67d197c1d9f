"""Each tenant's `max_rate`, counted from its own stream's sequence numbers.

A tenant's jobs sit on a stream of their own, so the stream sequence counts that
tenant's publishes, whichever worker sees them. A job published in window `w` (fixed
windows of `max(1, 1/rate)` seconds) is over the quota when more than `rate x window`
jobs came before it in `w`: its sequence minus the smallest sequence this worker has
seen in `w`. Every worker reaches the same verdict up to the jobs it has not seen (with
several workers the count can fall short by about one job per worker); rejected jobs
count too, as they were published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["TenantRates"]

_KEEP_WINDOWS = 8


class TenantRates:
    """Fixed-window publish counts per tenant, from stream sequences and publish times."""

    def __init__(self) -> None:
        self._limits: dict[str, float] = {}
        self._firsts: dict[str, dict[int, int]] = {}

    def set_limits(self, limits: Mapping[str, float | None]) -> None:
        """Jobs per second per tenant; None (or a tenant not named) is unlimited."""
        self._limits = {t: rate for t, rate in limits.items() if rate is not None and rate > 0}
        for tenant in list(self._firsts):
            if tenant not in self._limits:
                del self._firsts[tenant]

    def limit(self, tenant: str | None) -> float | None:
        return self._limits.get(tenant) if tenant is not None else None

    def over(self, tenant: str | None, sequence: int, published_s: float) -> bool:
        """Whether the job at `sequence`, published at `published_s`, is past the rate."""
        rate = self.limit(tenant)
        if rate is None or tenant is None:
            return False
        window_s = max(1.0, math.ceil(1.0 / rate))
        allowed = max(1, math.floor(rate * window_s))
        window = math.floor(published_s / window_s)
        firsts = self._firsts.setdefault(tenant, {})
        first = firsts.get(window)
        if first is None or sequence < first:
            firsts[window] = first = sequence
            for old in [w for w in firsts if w < window - _KEEP_WINDOWS]:
                del firsts[old]
        return sequence - first + 1 > allowed
