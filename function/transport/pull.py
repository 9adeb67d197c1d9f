"""A continuous JetStream pull that hands over each message the moment it arrives.

nats-py's `fetch(n)` returns a batch only when it is full or its timeout ends, so a
lone job would wait for the timeout. `PullFeed` keeps one pull request of up to `n`
messages open at a time (`$JS.API.CONSUMER.MSG.NEXT`) on its own inbox and calls
`deliver(msg)` for every message as it lands; a status reply (404 no messages,
408 request expired, 409 ...) or the n-th message ends the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header as JsHeader
from nats.js.api import StatusCode

__all__ = ["PullFeed"]

_GRACE_S = 0.5


class PullFeed:
    """One consumer's pull requests, one open at a time."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        deliver: Callable[[Msg], None],
        *,
        expires: float,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._deliver = deliver
        self._expires = expires
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._remaining = 0
        self._deadline = 0.0
        self._ended = asyncio.Event()
        self._ended.set()
        self.last_status: str | None = None

    @property
    def ended_normally(self) -> bool:
        """The last request ran its course (filled, or expired with 408); anything else,
        e.g. 503 for a missing stream or consumer, 409 for a leader change, means trouble."""
        return self.last_status in (None, StatusCode.REQUEST_TIMEOUT)

    @property
    def open(self) -> bool:
        """A request is outstanding (and has not silently expired)."""
        return self._remaining > 0 and time.monotonic() < self._deadline

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def request(self, batch: int) -> None:
        """Open a request for up to `batch` messages, unless one is open already."""
        if self.open or batch <= 0:
            return
        self._remaining = batch
        self.last_status = None
        self._deadline = time.monotonic() + self._expires + _GRACE_S
        self._ended.clear()
        body = {"batch": batch, "expires": int(self._expires * 1e9)}
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)

    async def wait_ended(self, timeout: float) -> None:
        """Until the open request is over (or `timeout`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        if not self.open:
            self._ended.set()

    def _end(self) -> None:
        self._remaining = 0
        self._ended.set()

    async def _on_msg(self, msg: Msg) -> None:
        # Status messages carry no ack subject; a job's own "Status" header is not one.
        status = (msg.headers or {}).get(JsHeader.STATUS) if not msg.reply else None
        if status:
            if status != StatusCode.CONTROL_MESSAGE:  # an idle heartbeat; others end the request
                self.last_status = status
                self._end()
            return
        self._remaining -= 1
        if self._remaining <= 0:
            self._end()
        self._deliver(msg)

    async def stop(self) -> None:
        """Unsubscribe at once: the server then skips this inbox's open request, so jobs
        handed back during a drain go to other replicas instead of coming back here."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._end()
