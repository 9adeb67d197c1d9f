"""The simulation loop: arrivals, one shared FIFO queue, a fleet of replicas, a controller.

Time advances in fixed ticks (`dt`); control-plane events (KEDA polls, HPA syncs, pushes,
replicas becoming ready) fire at the first tick at or after their time, and see the
backlog with that tick's arrivals (plus the jobs still in service). Within a tick
each ready replica serves at the throughput of the batch size the queue allows
(`min(max_batch, queue / ready)`); a job's latency is its wait until the tick it is
taken in, plus that batch's run time. Arrivals are drawn once per seed and shared by
every policy, so policies are compared on the very same jobs.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Protocol

import numpy as np

from loadgen.run.profiles import Profile
from loadgen.sim.params import ColdStart, PolicyResult, ServiceModel, SimPoint

__all__ = [
    "EPS",
    "Controller",
    "Fleet",
    "Trace",
    "make_trace",
    "simulate_policy",
    "weighted_percentile",
]

EPS = 1e-9


class Trace:
    """Arrivals per tick over the horizon, with their running total."""

    def __init__(self, per_tick: np.ndarray, dt: float) -> None:
        self.per_tick = per_tick
        self.dt = dt
        self.cumulative = np.concatenate([[0.0], np.cumsum(per_tick)])

    @property
    def ticks(self) -> int:
        return len(self.per_tick)

    def rate(self, tick: int, window_s: float) -> float:
        """Mean arrival rate over the last `window_s` before `tick` (what a scaler sees)."""
        back = max(round(window_s / self.dt), 1)
        start = max(tick - back, 0)
        span = (tick - start) * self.dt
        return float(self.cumulative[tick] - self.cumulative[start]) / span if span else 0.0

    def per_second(self) -> np.ndarray:
        """Arrivals in each whole second (the oracle's view of the future)."""
        per_s = max(round(1 / self.dt), 1)
        seconds = math.ceil(self.ticks / per_s)
        padded = np.zeros(seconds * per_s)
        padded[: self.ticks] = self.per_tick
        result: np.ndarray = padded.reshape(seconds, per_s).sum(axis=1)
        return result


def make_trace(profile: Profile, horizon: float, dt: float, seed: int, poisson: bool) -> Trace:
    """Arrivals per tick: Poisson counts (seeded) or the exact fluid amount `rate * dt`."""
    ticks = round(horizon / dt)
    mids = (np.arange(ticks) + 0.5) * dt
    means = np.array([profile.rate_at(t) for t in mids]) * dt
    if not poisson:
        return Trace(means, dt)
    rng = np.random.default_rng(seed)
    return Trace(rng.poisson(means).astype(float), dt)


class Fleet:
    """Replicas, by the time each is (or will be) ready; sorted, newest last."""

    def __init__(self, cold_start: float) -> None:
        self.cold_start = cold_start
        self.ready_at: list[float] = []
        self.first_ready: float | None = None
        self.gpu_before_zero = 0.0

    @property
    def size(self) -> int:
        return len(self.ready_at)

    def ready(self, t: float) -> int:
        return bisect.bisect_right(self.ready_at, t + EPS)

    def scale_to(self, replicas: int, t: float) -> None:
        """Add replicas (ready after the cold start) or remove the newest ones first."""
        if replicas > self.size and self.first_ready is None:
            self.first_ready = t + self.cold_start
        while self.size < replicas:
            self.ready_at.append(t + self.cold_start)
        del self.ready_at[replicas:]

    def add_starting(self, ready_at: float) -> None:
        """A replica requested before time zero, ready at `ready_at`; its GPU time before
        zero is counted in `gpu_before_zero`."""
        self.ready_at.append(ready_at)
        self.gpu_before_zero += max(self.cold_start - ready_at, 0.0)
        if self.first_ready is None:
            self.first_ready = ready_at

    def add_ready(self, replicas: int) -> None:
        """Replicas that exist and are ready from time zero (an always-on fleet)."""
        self.ready_at = [-math.inf] * replicas + self.ready_at


class Controller(Protocol):
    """Decides the fleet size; called once per tick before service."""

    def step(self, tick: int, t: float, lag: float, fleet: Fleet) -> None: ...


class _Queue:
    """FIFO of (arrival time, amount) buckets; serving records latency and weight."""

    def __init__(self) -> None:
        self.buckets: deque[list[float]] = deque()
        self.total = 0.0
        self.latency: list[float] = []
        self.weight: list[float] = []

    def add(self, t: float, amount: float) -> None:
        if amount > 0:
            self.buckets.append([t, amount])
            self.total += amount

    def serve(self, amount: float, start: float, batch_time: float) -> float:
        served = 0.0
        while amount > EPS and self.buckets:
            bucket = self.buckets[0]
            take = min(bucket[1], amount)
            self.latency.append(max(start - bucket[0], 0.0) + batch_time)
            self.weight.append(take)
            bucket[1] -= take
            amount -= take
            served += take
            if bucket[1] <= EPS:
                self.buckets.popleft()
        self.total = max(self.total - served, 0.0)
        return served


def weighted_percentile(values: list[float], weights: list[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values` weighted by `weights`."""
    if not values:
        return 0.0
    order = np.argsort(values)
    v = np.asarray(values)[order]
    cum = np.cumsum(np.asarray(weights)[order])
    index = int(np.searchsorted(cum, q / 100 * cum[-1] - EPS))
    return float(v[min(index, len(v) - 1)])


def simulate_policy(
    name: str,
    description: str,
    controller: Controller,
    trace: Trace,
    service: ServiceModel,
    cold: ColdStart,
    *,
    price_per_gpu_hour: float,
    initial_ready: int = 0,
) -> PolicyResult:
    """Run one policy over the trace, with `initial_ready` replicas ready at time zero."""
    dt = trace.dt
    fleet = Fleet(cold.total)
    fleet.add_ready(initial_ready)
    queue = _Queue()
    per_second = max(round(1 / dt), 1)
    gpu = peak_backlog = 0.0
    peak_replicas = 0
    in_service = 0.0
    timeline: list[SimPoint] = []
    for tick in range(trace.ticks):
        t = tick * dt
        queue.add(t + dt / 2, float(trace.per_tick[tick]))
        controller.step(tick, t, queue.total + in_service, fleet)
        ready = fleet.ready(t)
        in_service = 0.0
        if ready and queue.total > EPS:
            batch = min(float(service.max_batch), max(1.0, queue.total / ready))
            run_time = service.batch_time(batch)
            served = queue.serve(ready * batch / run_time * dt, t, run_time)
            in_service = min(served / dt * run_time, ready * batch)
        lag = queue.total + in_service
        gpu += fleet.size * dt
        peak_backlog = max(peak_backlog, lag)
        peak_replicas = max(peak_replicas, fleet.size)
        if tick % per_second == 0:
            timeline.append(
                SimPoint(t=tick // per_second, replicas=fleet.size, ready=ready, backlog=lag)
            )
    served_total = float(sum(queue.weight))
    gpu += fleet.gpu_before_zero
    return PolicyResult(
        policy=name,
        description=description,
        gpu_seconds=gpu,
        cost=gpu / 3600 * price_per_gpu_hour,
        latency_p50_s=weighted_percentile(queue.latency, queue.weight, 50),
        latency_p99_s=weighted_percentile(queue.latency, queue.weight, 99),
        latency_max_s=max(queue.latency, default=0.0),
        peak_backlog=peak_backlog,
        peak_replicas=peak_replicas,
        first_ready_s=fleet.first_ready,
        served=served_total,
        unserved=queue.total,
        timeline=timeline,
    )
