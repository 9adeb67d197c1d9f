"""`StreamWrites`: publish to JetStream and await the stream's acknowledgements, many at
a time.

A worker stores one result per job and must see each stored before it acks the job.
nats-py's `JetStreamContext.publish` pays a timer, a random token and a full `PubAck`
per message; its `publish_async` leaves the future unresolved when the server refuses
the message (its handler raises). Here one wildcard inbox takes every acknowledgement,
each write gets a counter token and a future, and a batch waits once for all of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

__all__ = ["StreamWrites"]

_NO_RESPONDERS = "503"


class StreamWrites:
    """Writes to JetStream on one connection; `write()` then `settle()`."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[int]] = {}

    async def _open(self) -> None:
        prefix = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{prefix}*", cb=self._on_ack)
        self._prefix = prefix  # only once acknowledgements can arrive

    async def write(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[int]:
        """Publish `body`; the future resolves to its stream sequence once stored, or
        fails with the server's refusal (`APIError`, `NoStreamResponseError`)."""
        if not self._prefix:
            await self._open()
        token = str(next(self._tokens))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._nc.publish(subject, body, reply=self._prefix + token, headers=headers)
        except BaseException:
            del self._waiting[token]
            raise
        return future

    async def settle(
        self, writes: Sequence[asyncio.Future[int]], timeout: float
    ) -> list[BaseException | None]:
        """Wait up to `timeout` for every write: None for each stored, else its error
        (`TimeoutError` for one still unanswered)."""
        if writes:
            await asyncio.wait(writes, timeout=timeout)
        outcomes: list[BaseException | None] = []
        for future in writes:
            if not future.done():
                future.cancel()
                self._forget(future)
                outcomes.append(TimeoutError(f"no acknowledgement within {timeout:g}s"))
            elif future.cancelled():  # never counts as stored
                outcomes.append(TimeoutError("the write was cancelled"))
            else:
                outcomes.append(future.exception())
        return outcomes

    def _forget(self, future: asyncio.Future[int]) -> None:
        for token, waiting in list(self._waiting.items()):
            if waiting is future:
                del self._waiting[token]

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(APIError(description="unreadable acknowledgement"))
            return
        error = answer.get("error") if isinstance(answer, dict) else "not an object"
        if error:
            future.set_exception(_refusal(error))
            return
        future.set_result(int(answer.get("seq", 0)))


def _refusal(error: object) -> APIError:
    """The `APIError` subclass nats-py would raise for the server's `error` object."""
    if not isinstance(error, dict):
        return APIError(description=str(error))
    try:
        APIError.from_error(error)  # raises the matching subclass
    except APIError as exc:
        return exc
    return APIError(description=str(error))
