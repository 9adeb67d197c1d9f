"""`StreamWrites`: publish to JetStream, or ack JetStream messages, and await the server's
answers many at a time.

A worker stores one result per job and must see each stored before it acks the job,
then sees each ack confirmed (an ack lost in a leader change would have the job
delivered and answered again). nats-py's `JetStreamContext.publish` and `Msg.ack_sync`
pay a timer, a random token and a task per message; its `publish_async` leaves the future
unresolved when the server refuses the message (its handler raises). Here one wildcard
inbox takes every answer, each request gets a counter token and a future, and a batch
waits once for all of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.errors import APIError, NoStreamResponseError

__all__ = ["DuplicateWrite", "StreamWrites"]

_NO_RESPONDERS = "503"
T = TypeVar("T")


class DuplicateWrite(Exception):
    """The stream already held a message with this `Nats-Msg-Id` (within its duplicate
    window): this write stored nothing."""

    def __init__(self, sequence: int) -> None:
        super().__init__(f"a duplicate of stream sequence {sequence}")
        self.sequence = sequence


class StreamWrites:
    """Writes and acks on one connection: `write()` or `ack()`, then `settle()`."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[asyncio.Future[int], Callable[[Msg], int]]] = {}

    async def _open(self) -> None:
        prefix = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{prefix}*", cb=self._on_answer)
        self._prefix = prefix  # only once answers can arrive

    async def _request(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None,
        read: Callable[[Msg], int],
    ) -> asyncio.Future[int]:
        if not self._prefix:
            await self._open()
        token = str(next(self._tokens))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, read)
        try:
            await self._nc.publish(subject, body, reply=self._prefix + token, headers=headers)
        except BaseException:
            del self._waiting[token]
            raise
        return future

    async def write(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[int]:
        """Publish `body`; the future resolves to its stream sequence once stored, or
        fails with the server's refusal (`APIError`, `NoStreamResponseError`) or with
        `DuplicateWrite` when the stream already held its `Nats-Msg-Id`."""
        return await self._request(subject, body, headers, _stored_sequence)

    async def ack(self, msg: Msg) -> asyncio.Future[int]:
        """Ack a JetStream message; the future resolves once the server confirms it, or
        fails with `NoRespondersError` (its consumer is gone)."""
        if not msg.reply:
            raise ValueError("the message has no reply subject to ack")
        return await self._request(msg.reply, b"", None, _confirmed)

    async def settle_all(
        self, sends: Sequence[Coroutine[Any, Any, asyncio.Future[int]]], timeout: float
    ) -> list[BaseException | None]:
        """Send each request (`write()` or `ack()` coroutines, in order), then `settle()`
        them; one that cannot be sent (the connection is gone) fails on its own."""
        requests: list[asyncio.Future[int]] = []
        for index, send in enumerate(sends):
            try:
                requests.append(await send)
            except Exception as exc:
                failed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                requests.append(failed)
            except BaseException:  # cancelled: the rest are never sent
                for unsent in sends[index + 1 :]:
                    unsent.close()
                raise
        return await self.settle(requests, timeout)

    async def settle(
        self, requests: Sequence[asyncio.Future[T]], timeout: float
    ) -> list[BaseException | None]:
        """Wait up to `timeout` for every request: None for each answered, else its error
        (`TimeoutError` for one still unanswered)."""
        if requests:
            await asyncio.wait(requests, timeout=timeout)
        outcomes: list[BaseException | None] = []
        for future in requests:
            if not future.done():
                future.cancel()
                self._forget(future)
                outcomes.append(TimeoutError(f"no answer within {timeout:g}s"))
            elif future.cancelled():  # never counts as stored or acked
                outcomes.append(TimeoutError("the request was cancelled"))
            else:
                outcomes.append(future.exception())
        return outcomes

    def _forget(self, future: asyncio.Future[T]) -> None:
        for token, (waiting, _) in list(self._waiting.items()):
            if waiting is future:
                del self._waiting[token]

    async def _on_answer(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None or entry[0].done():
            return
        future, read = entry
        try:
            future.set_result(read(msg))
        except Exception as exc:
            future.set_exception(exc)


def _no_responders(msg: Msg) -> bool:
    return not msg.data and msg.headers is not None and msg.headers.get("Status") == _NO_RESPONDERS


def _stored_sequence(msg: Msg) -> int:
    """The stream sequence of a stored message, or the refusal raised."""
    if _no_responders(msg):
        raise NoStreamResponseError()
    try:
        answer = json.loads(msg.data)
    except ValueError:
        raise APIError(description="unreadable acknowledgement") from None
    error = answer.get("error") if isinstance(answer, dict) else "not an object"
    if error:
        raise _refusal(error)
    if answer.get("duplicate"):
        raise DuplicateWrite(int(answer.get("seq", 0)))
    return int(answer.get("seq", 0))


def _confirmed(msg: Msg) -> int:
    """An ack's confirmation: any answer but "no responders" (the consumer is gone)."""
    if _no_responders(msg):
        raise NoRespondersError()
    return 0


def _refusal(error: object) -> APIError:
    """The `APIError` subclass nats-py would raise for the server's `error` object."""
    if not isinstance(error, dict):
        return APIError(description=str(error))
    try:
        APIError.from_error(error)  # raises the matching subclass
    except APIError as exc:
        return exc
    return APIError(description=str(error))
