"""The embedded stack's cold starts: at most `max_starting` workers start at once, the
next once one is serving, ready and past its first batch (or has been starting for
`start_timeout_s`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from function.contract.heartbeat import WorkerState
from scaler.local import LocalConfig, LocalScaler, default_max_starting
from scaler.policy import Decision, Reason


@dataclass
class FakeReplicas:
    ready: int = 0  # of which `first_batch` are still on their first batch
    first_batch: int = 0

    def count(self, *states: WorkerState) -> int:
        return self.ready if WorkerState.READY in states else 0

    def serving(self) -> int:
        return self.ready - self.first_batch


@dataclass
class FakeWatcher:
    replicas: FakeReplicas = field(default_factory=FakeReplicas)
    pending: int = 40
    ack_pending: int = 0


class FakeHub:
    """Asks for `replicas` workers; `ready` of them have said so in heartbeats."""

    def __init__(self, replicas: int) -> None:
        self.watched = FakeWatcher()
        self.replicas = replicas

    async def watcher(self, function: str) -> FakeWatcher:
        return self.watched

    def decide_now(self, watcher: Any, policy: Any) -> Decision:
        return Decision(
            demand=float(self.replicas),
            replicas=self.replicas,
            active=self.replicas > 0,
            reason=Reason.BACKLOG,
            backlog=40,
            throughput=1.0,
            lead_s=1.0,
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes replaced by sleeping ones (killed at teardown)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(url: str, function: str, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(process)
        return process

    monkeypatch.setattr("scaler.local.start_worker_process", start)
    yield started
    for process in started:
        process.kill()
        process.wait()


def local(hub: FakeHub, clock: Clock, tmp_path: Path, **config: Any) -> LocalScaler:
    settings = LocalConfig(function="tiny", log_dir=tmp_path, **config)
    return LocalScaler(hub, "nats://127.0.0.1:1", settings, clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wanted", "config", "ticks"),
    [
        # from zero, one starts alone; the next once it is ready, and so on
        (3, {"max_starting": 1}, [(0, 0, 1), (1, 0, 1), (1, 1, 2), (1, 2, 3)]),
        # ready but still on its first batch: the next waits for that batch
        (2, {"max_starting": 1}, [(0, 0, 1), (1, (1, 1), 1), (2, (1, 0), 2)]),
        # one never ready stops holding back the others after start_timeout_s
        (2, {"max_starting": 1, "start_timeout_s": 30}, [(0, 0, 1), (29, 0, 1), (31, 0, 2)]),
        # several may start together
        (4, {"max_starting": 2}, [(0, 0, 2), (1, 1, 3), (1, 2, 4)]),
    ],
)
async def test_cold_starts_are_limited_to_max_starting_at_once(
    sleepers: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    wanted: int,
    config: dict[str, float],
    ticks: list[tuple[float, int | tuple[int, int], int]],
) -> None:
    hub, clock = FakeHub(replicas=wanted), Clock()
    scaler = local(hub, clock, tmp_path, max_workers=wanted, **config)
    for now, ready, replicas in ticks:
        clock.now = now
        seen = hub.watched.replicas
        seen.ready, seen.first_batch = ready if isinstance(ready, tuple) else (ready, 0)
        await scaler.step()
        assert scaler.replicas == replicas, (now, ready)
    assert len(sleepers) == ticks[-1][2]


def test_by_default_one_worker_starts_per_four_cpus(tmp_path: Path) -> None:
    assert local(FakeHub(1), Clock(), tmp_path).max_starting == default_max_starting() >= 1
