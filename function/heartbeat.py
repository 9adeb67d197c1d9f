"""Worker heartbeats: each worker publishes its state on `surge.heartbeat.<function>`.

The scaler uses them for per-replica throughput and cold-start times; the load
generator for replica timelines. Core NATS (not stored): a missing beat means gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict, Field

from function.periodic import end_task
from function.settings import heartbeat_subject

__all__ = ["Heartbeat", "HeartbeatPublisher", "WorkerState"]


class WorkerState(StrEnum):
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class Heartbeat(BaseModel):
    """One worker's state at one moment."""

    model_config = ConfigDict(extra="ignore")

    worker_id: str
    function: str
    state: WorkerState
    started_at: datetime
    ready_at: datetime | None = None
    cold_start_s: float | None = Field(default=None, description="Process start to ready.")
    cold_start_phases: dict[str, float] = Field(
        default_factory=dict, description="Seconds per cold-start phase (import ... total)."
    )
    jobs_completed: int = 0
    jobs_per_s: float = 0.0
    mean_batch_size: float = 0.0
    in_flight: int = 0
    interval_s: float = 1.0
    sent_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class HeartbeatPublisher:
    """Publishes a `Heartbeat` every `interval` seconds from a snapshot callback."""

    def __init__(
        self, nc: NATS, function: str, snapshot: Callable[[], Heartbeat], interval: float
    ) -> None:
        self._nc = nc
        self._subject = heartbeat_subject(function)
        self._snapshot = snapshot
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, int] = (time.monotonic(), 0)

    def rate(self, completed: int) -> float:
        """Jobs per second since the previous call."""
        now = time.monotonic()
        then, before = self._last
        self._last = (now, completed)
        return (completed - before) / (now - then) if now > then else 0.0

    async def beat(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.publish(self._subject, self._snapshot().model_dump_json().encode())

    async def _loop(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await end_task(task)
        await self.beat()
