"""`ResultInbox`: results pushed to one reply subject, with the store as the fallback
for those not pushed in time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from function.contract.wire import Result

__all__ = ["ResultInbox", "StoredLookup"]

StoredLookup = Callable[[str], Awaitable[Result | None]]  # a job id's stored result, if any


class ResultInbox:
    """Collects results sent to one reply subject."""

    def __init__(self, nc: NATS, subject: str, stored: StoredLookup) -> None:
        self._nc = nc
        self._stored = stored
        self.subject = subject
        self.results: dict[str, Result] = {}
        self.received_at: dict[str, float] = {}
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._waiters: dict[str, asyncio.Future[Result]] = {}

    def expect(self, job_id: str) -> asyncio.Future[Result]:
        """A future resolved when `job_id`'s result arrives."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if job_id in self.results:
            future.set_result(self.results[job_id])
        else:
            self._waiters[job_id] = future
        return future

    async def _on_result(self, msg: Msg) -> None:
        result = Result.model_validate_json(msg.data)
        self.results.setdefault(result.job_id, result)
        self.received_at.setdefault(result.job_id, time.monotonic())
        waiter = self._waiters.pop(result.job_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
        self._arrived.set()

    async def start(self) -> ResultInbox:
        self._sub = await self._nc.subscribe(self.subject, cb=self._on_result)
        await self._nc.flush()
        return self

    async def wait(self, job_ids: Iterable[str], timeout: float) -> dict[str, Result]:
        """Results for `job_ids`; those not pushed in time are looked up in the store."""
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.results.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 1.0))
        for job_id in wanted - self.results.keys():
            stored = await self._stored(job_id)
            if stored is not None:
                self.results[job_id] = stored
        return {j: self.results[j] for j in wanted if j in self.results}

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
