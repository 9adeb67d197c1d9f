"""Publishing heartbeats: a `Heartbeat` every interval on core NATS, and a last one on stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from function.contract.heartbeat import Heartbeat
from function.contract.settings import heartbeat_subject
from function.transport.periodic import end_task

__all__ = ["HeartbeatPublisher"]


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
