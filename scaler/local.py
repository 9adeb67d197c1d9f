"""The embedded stack's orchestrator: worker processes started and stopped locally.

    local = LocalScaler(hub, nats_url, LocalConfig(function="tiny", max_workers=2))
    await local.run(stop)          # until `stop` is set; then `await local.shutdown()`

Each tick asks the hub for the same `Decision` KEDA gets and follows it: more
replicas when demand rises (up to `max_workers`; a warming worker counts), fewer only
after demand stayed lower for `cooldown_s`, and none once the function has been
inactive for `cooldown_s`. The workers share this machine, and a cold start is CPU
work (imports, session, warm run): at most `max_starting` start at once (by default one
per four usable CPUs, at least one), and the next once one is serving: ready and past
its first batch, the slowest it runs. So from zero the first is ready, and answering,
sooner than with others starting beside it. Stopping is draining: SIGTERM, and the worker
hands back or finishes what it holds. Clusters use KEDA instead; this is the
single-machine default and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from function.local.nats_server import free_port
from function.local.processes import start_worker_process
from scaler.config import ScalerMetadata
from scaler.hub import ScalerHub
from scaler.metrics import SCALER_METRICS as M
from scaler.policy import Decision
from scaler.watcher import WatchError

__all__ = ["LocalConfig", "LocalScaler", "TimelinePoint", "default_max_starting"]

log = logging.getLogger("surge.scaler.local")

TimelinePoint = tuple[float, int, int]
"""(seconds since start, replicas running and not draining, pending + ack-pending jobs)"""


@dataclass
class LocalConfig:
    """How the embedded stack runs workers."""

    function: str = "tiny"
    max_workers: int = 2
    cooldown_s: float = 10.0
    tick_s: float = 0.1
    log_dir: Path = Path(".cache/surge/local")
    worker_env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    max_starting: int = 0  # workers starting at once; 0: one per four usable CPUs (>= 1)
    start_timeout_s: float = 60.0  # a worker not ready by then no longer holds back others


def default_max_starting() -> int:
    """Cold starts this machine runs at once without slowing each other much."""
    from function.models.hardware import usable_cpus  # here: `function.models` loads ORT

    return max(1, usable_cpus() // 4)


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes]
    started: float


class LocalScaler:
    """Follows the scaler's decisions with local worker processes."""

    def __init__(
        self,
        hub: ScalerHub,
        nats_url: str,
        config: LocalConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.nats_url = nats_url
        self.config = config
        self.meta = ScalerMetadata.parse({**config.metadata, "function": config.function})
        self.policy = self.meta.policy()
        self.clock = clock
        self.running: list[_Worker] = []
        self.draining: list[_Worker] = []
        self.timeline: deque[TimelinePoint] = deque(maxlen=100_000)
        self.decision: Decision | None = None
        self.exits: list[tuple[int, int | None, bool]] = []  # (worker, code, asked to stop)
        self._started = clock()
        self._count = 0
        self._lower_since: float | None = None
        self.max_starting = config.max_starting or default_max_starting()
        self.config.log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def replicas(self) -> int:
        return len(self.running)

    def _start_worker(self) -> None:
        self._count += 1
        env = {
            "SURGE_HTTP_HOST": "127.0.0.1",
            "SURGE_HTTP_PORT": str(free_port()),
            **self.config.worker_env,
        }
        log_path = self.config.log_dir / f"worker-{self._count}.log"
        process = start_worker_process(self.nats_url, self.config.function, log_path, env)
        self.running.append(_Worker(self._count, process, self.clock()))
        log.info("started worker %d (pid %d)", self._count, process.pid)

    def _drain_worker(self) -> None:
        worker = self.running.pop()  # the newest: the others are warmest
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
        self.draining.append(worker)
        log.info("draining worker %d (pid %d)", worker.number, worker.process.pid)

    def _reap(self) -> None:
        for group in (self.running, self.draining):
            for worker in [w for w in group if w.process.poll() is not None]:
                group.remove(worker)
                code = worker.process.returncode
                self.exits.append((worker.number, code, group is self.draining))
                if group is self.running:
                    log.warning("worker %d exited unasked (code %s)", worker.number, code)
                elif code == 0:
                    log.info("worker %d stopped", worker.number)
                else:
                    log.info("worker %d stopped (code %s)", worker.number, code)

    def target(self, decision: Decision) -> int:
        """Replicas the decision asks for, within `max_workers` (0 when inactive)."""
        if not decision.active:
            return 0
        return max(1, min(decision.replicas, self.config.max_workers))

    def starting(self, serving: int, now: float) -> int:
        """Workers still starting: those running but not (yet) serving (ready, and past
        their first batch), counting only those started within `start_timeout_s`."""
        young = sum(1 for w in self.running if now - w.started < self.config.start_timeout_s)
        return max(0, min(young, self.replicas - serving))

    async def step(self) -> Decision | None:
        """One tick: reap, decide, start (within `max_starting`) or drain after the
        cooldown."""
        self._reap()
        now = self.clock()
        try:
            watcher = await self.hub.watcher(self.config.function)
            decision = self.hub.decide_now(watcher, self.policy)
        except WatchError as exc:
            log.warning("no decision (%s): keeping %d workers", exc, self.replicas)
            return None
        self.decision = decision
        want = self.target(decision)
        if want > self.replicas:
            self._lower_since = None
            # the next start waits for a worker's first batch, not only its readiness:
            # on shared cores a start beside that batch delays the first results most
            room = self.max_starting - self.starting(watcher.replicas.serving(), now)
            for _ in range(min(want - self.replicas, max(room, 0))):
                self._start_worker()
        elif want < self.replicas:
            self._lower_since = self._lower_since if self._lower_since is not None else now
            if now - self._lower_since >= self.config.cooldown_s:
                while self.replicas > want:
                    self._drain_worker()
                self._lower_since = None
        else:
            self._lower_since = None
        backlog = watcher.pending + watcher.ack_pending
        point = (round(now - self._started, 3), self.replicas, backlog)
        if not self.timeline or self.timeline[-1][1:] != point[1:]:
            self.timeline.append(point)
        M.local_replicas.labels(self.config.function).set(self.replicas)
        return decision

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `tick_s` until `stop` is set (workers keep running: see `shutdown`)."""
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.tick_s)

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Drain every worker; kill those still running after `timeout`."""
        while self.running:
            self._drain_worker()
        deadline = self.clock() + timeout
        while self.draining and self.clock() < deadline:
            self._reap()
            await asyncio.sleep(0.1)
        for worker in self.draining:
            log.warning("worker %d did not drain in %.0fs: killing it", worker.number, timeout)
            worker.process.kill()
            self.exits.append((worker.number, worker.process.wait(), True))
        self.draining.clear()
        M.local_replicas.labels(self.config.function).set(0)
