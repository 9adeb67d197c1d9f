"""The worker's pull feeds: one per priority and source (the open jobs stream, each
tenant's stream), each kept asking for as many jobs as its room allows.

`room_for(key)` (the consumer's) says how many jobs a feed may take now; the feeds wait
on `room` when there is none. A failing pull is reported as trouble (readiness) and
through `on_trouble` (the topology watch); a lost connection is the connection's trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from function.contract.settings import JOBS_STREAM, Priority, WorkerSettings, tenant_stream
from function.transport.connection import Trouble
from function.transport.pull import PullFeed

__all__ = ["FeedKey", "Feeds"]

log = logging.getLogger("surge.consumer")

_MAX_BACKOFF_S = 2.0

# A pull feed: its priority and source ("" for the open jobs stream, else the tenant).
FeedKey = tuple[Priority, str]


class Feeds:
    """Pull feeds and their fetch loops."""

    def __init__(
        self,
        nc: NATS,
        settings: WorkerSettings,
        admit: Callable[[FeedKey, Msg], None],
        room_for: Callable[[FeedKey], int],
        room: asyncio.Event,
        stopping: asyncio.Event,
    ) -> None:
        self._nc = nc
        self._settings = settings
        self._admit = admit
        self._room_for = room_for
        self._room = room
        self._stopping = stopping
        self.feeds: dict[FeedKey, PullFeed] = {}
        self._tenant_loops: dict[str, list[asyncio.Task[None]]] = {}
        self._trouble: dict[FeedKey, Trouble] = {}
        self.on_trouble: Callable[[], None] | None = None
        self.on_loop_done: Callable[[asyncio.Task[None]], None] | None = None

    @property
    def tenants(self) -> list[str]:
        """The tenants whose streams are fetched from."""
        return sorted({source for _, source in self.feeds if source})

    @property
    def trouble(self) -> Trouble | None:
        """The oldest failing pull (a missing stream or consumer, an error status)."""
        return min(self._trouble.values(), key=lambda t: t[1], default=None)

    async def _open(self, key: FeedKey, stream: str, consumer: str) -> PullFeed:
        feed = PullFeed(
            self._nc,
            stream,
            consumer,
            lambda msg: self._admit(key, msg),
            expires=self._settings.fetch_timeout_s,
        )
        await feed.start()
        self.feeds[key] = feed
        return feed

    async def open_jobs(self, consumers: dict[Priority, str]) -> list[asyncio.Future[None]]:
        """Feeds on the open jobs stream; returns their fetch loops (to be awaited)."""
        loops = []
        for priority, name in consumers.items():
            key = (priority, "")
            loops.append(self.fetch_loop(key, await self._open(key, JOBS_STREAM, name)))
        return [asyncio.ensure_future(loop) for loop in loops]

    async def add_tenant(self, tenant: str, consumers: dict[Priority, str]) -> None:
        """Also fetch `tenant`'s jobs (from its stream)."""
        if self._stopping.is_set() or tenant in self.tenants:
            return
        loops = self._tenant_loops.setdefault(tenant, [])
        for priority, name in consumers.items():
            key = (priority, tenant)
            feed = await self._open(key, tenant_stream(tenant), name)
            task = asyncio.create_task(self.fetch_loop(key, feed), name=f"fetch-{tenant}")
            loops.append(task)
            if self.on_loop_done is not None:
                task.add_done_callback(self.on_loop_done)
        log.info("fetching tenant %s's jobs", tenant)

    async def remove_tenant(self, tenant: str) -> None:
        """Stop fetching `tenant`'s jobs (its stream is gone); jobs in hand still finish."""
        for task in self._tenant_loops.pop(tenant, []):
            task.cancel()
        for key in [k for k in self.feeds if k[1] == tenant]:
            await self.feeds.pop(key).stop()
            self._trouble.pop(key, None)
        log.info("stopped fetching tenant %s's jobs", tenant)

    async def stop(self, timeout: float) -> None:
        """Close every feed (so handed-back jobs go to other replicas); let loops end."""
        for feed in self.feeds.values():
            await feed.stop()
        loops = [task for tasks in self._tenant_loops.values() for task in tasks]
        if loops:
            await asyncio.wait(loops, timeout=timeout)

    def _pulled(self, key: FeedKey, problem: str | None) -> None:
        if problem is None:
            self._trouble.pop(key, None)
            return
        if key not in self._trouble:
            self._trouble[key] = (problem, time.monotonic())
        if self.on_trouble is not None:
            self.on_trouble()

    async def fetch_loop(self, key: FeedKey, feed: PullFeed) -> None:
        """Keep a pull request open for as many jobs as this feed has room for."""
        priority, source = key
        where = f"{priority.value}{f' of tenant {source}' if source else ''}"
        poll = self._settings.fetch_timeout_s
        backoff = 0.0
        while not self._stopping.is_set():
            room = self._room_for(key)
            if not self._nc.is_connected:
                self._trouble.clear()  # the connection is the problem, and says so
            if room <= 0 or not self._nc.is_connected:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), min(poll, 0.25))
                continue
            try:
                await feed.request(room)
            except Exception as exc:  # connection trouble: the client reconnects, try again
                log.warning("pull request failed on %s: %r", where, exc)
                self._pulled(key, f"pull request on {where} failed: {exc!r}"[:256])
                await asyncio.sleep(poll)
                continue
            await feed.wait_ended(poll)
            if feed.ended_normally:
                backoff = 0.0
                self._pulled(key, None)
                continue
            backoff = min(max(backoff * 2, 0.05), _MAX_BACKOFF_S)
            log.warning("pull on %s ended with status %s", where, feed.last_status)
            self._pulled(key, f"pull on {where} ended with status {feed.last_status}")
            await asyncio.sleep(backoff)
