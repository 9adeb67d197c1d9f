"""Estimators fed by the watcher: arrival rate, per-replica throughput, cold starts.

No I/O and no clock of their own: every sample carries its time, so tests feed them
hand-made sequences.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from function.contract.heartbeat import Heartbeat, WorkerState

__all__ = ["ArrivalRate", "ReplicaStats"]


class ArrivalRate:
    """Sustained arrivals (jobs/s) from a cumulative per-function arrival counter.

    The counter is `delivered.consumer_seq + num_pending` summed over the consumers:
    every job is delivered at least once or still pending (a redelivery counts again,
    which is work arriving again). The rate is the smaller of the two half-window
    rates, so a one-shot burst, already counted as backlog, is not also read as a
    lasting rate; traffic that keeps coming shows in both halves.
    """

    def __init__(self, window_s: float = 6.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, arrivals: int) -> None:
        """Record the cumulative counter at `now` (a reset counter restarts the window)."""
        if self._samples and arrivals < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, arrivals))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def _count_at(self, when: float) -> int | None:
        """The counter's value at the last sample at or before `when`."""
        found = None
        for t, count in self._samples:
            if t > when:
                break
            found = count
        return found

    def rate(self, now: float) -> float:
        """Jobs/s over the window ending at `now` (0 until the window is covered)."""
        if not self._samples:
            return 0.0
        half = self.window_s / 2
        start = self._count_at(now - self.window_s)
        middle = self._count_at(now - half)
        end = self._samples[-1][1]
        if start is None or middle is None:
            return 0.0
        return max(0.0, min(middle - start, end - middle) / half)


@dataclass
class _Seen:
    beat: Heartbeat
    at: float


@dataclass
class ReplicaStats:
    """Worker replicas from their heartbeats: states, throughput and cold starts.

    Throughput is an exponential average of `jobs_per_s` from ready workers, sampled
    only while a backlog waited (`saturated`): an idle replica's rate says nothing
    about what it can do. Lead time is the slowest of the last `keep` cold starts.
    """

    alpha: float = 0.3
    keep: int = 5
    expire_after_s: float = 3.0
    throughput: float | None = None
    _workers: dict[str, _Seen] = field(default_factory=dict)
    _cold: deque[float] = field(default_factory=deque)

    def observe(self, beat: Heartbeat, now: float, saturated: bool) -> None:
        """Take one heartbeat received at `now`."""
        first_ready = beat.state is WorkerState.READY and (
            beat.worker_id not in self._workers
            or self._workers[beat.worker_id].beat.state is not WorkerState.READY
        )
        if first_ready and beat.cold_start_s is not None:
            self._cold.append(beat.cold_start_s)
            while len(self._cold) > self.keep:
                self._cold.popleft()
        if beat.state is WorkerState.STOPPED:
            self._workers.pop(beat.worker_id, None)
        else:
            self._workers[beat.worker_id] = _Seen(beat, now)
        if saturated and beat.state is WorkerState.READY and beat.jobs_per_s > 0:
            if self.throughput is None:
                self.throughput = beat.jobs_per_s
            else:
                self.throughput += self.alpha * (beat.jobs_per_s - self.throughput)

    def expire(self, now: float) -> None:
        """Forget workers whose heartbeats stopped (three intervals, at least `expire_after_s`)."""
        for worker_id, seen in list(self._workers.items()):
            if now - seen.at > max(self.expire_after_s, 3 * seen.beat.interval_s):
                del self._workers[worker_id]

    def count(self, *states: WorkerState) -> int:
        """Live workers in any of `states` (all live workers when none are given)."""
        return sum(1 for s in self._workers.values() if not states or s.beat.state in states)

    def serving(self) -> int:
        """Live ready workers that have finished a job. One that has not is, for the
        cores it shares, still starting: its first batch is its slowest."""
        return sum(
            1
            for s in self._workers.values()
            if s.beat.state is WorkerState.READY and s.beat.jobs_completed > 0
        )

    def warming_ages(self, now: float) -> tuple[float, ...]:
        """How long each live warming worker has been starting (s) at `now`."""
        return tuple(
            max((s.beat.sent_at - s.beat.started_at).total_seconds(), 0.0) + max(now - s.at, 0.0)
            for s in self._workers.values()
            if s.beat.state is WorkerState.WARMING
        )

    @property
    def cold_start_s(self) -> float | None:
        return max(self._cold) if self._cold else None
