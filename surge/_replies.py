"""One client's reply inbox: results pushed by workers, handed to whoever waits.

Results nobody waits for yet are kept in a bounded buffer (by count and bytes, oldest
dropped first): the stored result stays the source of truth, the buffer only saves a
round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from function.contract.wire import Result

__all__ = ["Replies"]

log = logging.getLogger("surge.sdk")

KEEP_RESULTS = 1_000
KEEP_BYTES = 64 * 1024 * 1024


class Replies:
    """Subscribes to one inbox subject; `expect(job_id)` is resolved by its reply."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self.subject = nc.new_inbox()
        self._sub: Subscription | None = None
        self._waiters: dict[str, set[asyncio.Future[Result]]] = {}
        self._early: OrderedDict[str, tuple[Result, int]] = OrderedDict()
        self._early_bytes = 0

    async def start(self) -> Replies:
        self._sub = await self._nc.subscribe(self.subject, cb=self._on_reply)
        await self._nc.flush()
        return self

    def expect(self, job_id: str) -> asyncio.Future[Result]:
        """A future resolved with `job_id`'s result (at once if it came already)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        early = self._early.pop(job_id, None)
        if early is not None:
            self._early_bytes -= early[1]
            future.set_result(early[0])
        else:
            self._waiters.setdefault(job_id, set()).add(future)
        return future

    def forget(self, job_id: str, future: asyncio.Future[Result]) -> None:
        """Stop waiting with `future` (answered, timed out, or found in the store)."""
        waiting = self._waiters.get(job_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiters[job_id]
        if not future.done():
            future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        try:
            result = Result.model_validate_json(msg.data)
        except ValidationError:
            log.debug("ignored a reply that is not a result (%d bytes)", len(msg.data))
            return
        waiting = self._waiters.pop(result.job_id, set())
        for future in waiting:
            if not future.done():
                future.set_result(result)
        if not waiting:
            self._keep(result, len(msg.data))

    def _keep(self, result: Result, size: int) -> None:
        old = self._early.pop(result.job_id, None)
        if old is not None:
            self._early_bytes -= old[1]
        self._early[result.job_id] = (result, size)
        self._early_bytes += size
        while self._early and (len(self._early) > KEEP_RESULTS or self._early_bytes > KEEP_BYTES):
            _, (_, dropped) = self._early.popitem(last=False)
            self._early_bytes -= dropped

    async def close(self) -> None:
        for waiting in self._waiters.values():
            for future in waiting:
                future.cancel()
        self._waiters.clear()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
