"""Watch one function's JetStream consumers and its workers' heartbeats.

    watcher = FunctionWatcher(nc, "remove-bg")
    await watcher.start()                  # streams + consumers created when missing
    obs = watcher.observation()            # -> scaler.policy.Observation
    await watcher.next_poll(1.0)           # wake on the next look

The consumers' state comes from the JetStream API (`consumer_info`: num_pending,
num_ack_pending, num_redelivered) every `poll_interval_s` (100 ms by default), summed
over the function's consumers on the open jobs stream and on every tenant's stream
(`SURGE_TENANT_<id>`); the job payloads are never read. Heartbeats on
`surge.heartbeat.<function>` give the per-replica throughput, cold starts and the
replicas still warming; pre-warm plans come from the KV bucket.

Tenants are re-listed every `plan_refresh_s` (2 s by default), not on every poll: a
listing returns every stream's info, while a known tenant's jobs are counted on every
poll, so only a tenant new since the last listing waits (at most that long, well
inside a cold start). A new tenant's stream gets the function's consumers, as the open
stream does, so a function at zero counts that tenant's queued jobs. A tenant stream
gone between a listing and a poll is dropped from that poll and the tenants re-listed.

Errors: `WatchError` (`code` "unavailable": NATS cannot be reached or the state is
stale; "internal": the JetStream API refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError
from pydantic import ValidationError

from function.contract.errors import SurgeError
from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.settings import (
    JOBS_STREAM,
    Priority,
    WorkerSettings,
    heartbeat_subject,
    tenant_stream,
)
from function.transport.periodic import end_task
from function.transport.tenants import ensure_tenant_consumers, list_tenants
from function.transport.topology import (
    TopologyMismatch,
    consumer_config,
    ensure_streams,
    upgrade_consumer,
)
from scaler.config import ScalerSettings
from scaler.estimate import ArrivalRate, ReplicaStats
from scaler.metrics import SCALER_METRICS as M
from scaler.policy import Observation, Window
from scaler.prewarm import load_plans

__all__ = ["FunctionWatcher", "WatchError"]

log = logging.getLogger("surge.scaler.watcher")

_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    ServiceUnavailableError,
    OSError,
    TimeoutError,
)


class WatchError(SurgeError):
    """The consumers' state cannot be had: `code` is "unavailable" or "internal"."""

    def __init__(self, message: str, code: Literal["unavailable", "internal"]) -> None:
        super().__init__(message)
        self.code = code


def _classify(exc: BaseException) -> WatchError:
    if isinstance(exc, _UNAVAILABLE):
        return WatchError(f"NATS unavailable: {exc!r}", "unavailable")
    if isinstance(exc, APIError):
        return WatchError(f"JetStream API error: {exc}", "internal")
    return WatchError(f"watching failed: {exc!r}", "internal")


def _arrived(info: ConsumerInfo) -> int:
    """Jobs this consumer has delivered (redeliveries again) or still holds pending."""
    delivered = info.delivered.consumer_seq if info.delivered else 0
    return int(delivered or 0) + int(info.num_pending or 0)


class FunctionWatcher:
    """Consumer state, heartbeats and pre-warm plans of one function."""

    def __init__(
        self,
        nc: NATS,
        function: str,
        *,
        worker: WorkerSettings | None = None,
        settings: ScalerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.function = function
        self.worker = (worker or WorkerSettings()).model_copy(update={"function": function})
        self.settings = settings or ScalerSettings()
        self.clock = clock
        self.consumers = {p: consumer_config(self.worker, p) for p in Priority}
        self.replicas = ReplicaStats()
        self.arrivals = ArrivalRate()
        self.windows: tuple[Window, ...] = ()
        self.pending = self.ack_pending = self.retrying = 0
        self.tenants: tuple[str, ...] = ()  # tenants whose streams hold our consumers
        self.last_ok: float | None = None
        self.error: WatchError | None = None
        self._retrying_since: float | None = None
        self._plans_at = self._tenants_at = float("-inf")
        self._refused: set[str] = set()  # tenants whose consumers differ from ours
        self._arrived_by: dict[tuple[str, str], int] = {}  # (stream, consumer) -> counter
        self._arrived_total = 0
        self._tick = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Create what is missing, take a first look, then keep looking in the background."""
        try:
            await self._ensure()
            await self.follow_tenants()
            self._sub = await self.nc.subscribe(heartbeat_subject(self.function), cb=self._on_beat)
            await self.poll()
        except WatchError:
            await self.stop()
            raise
        except Exception as exc:
            await self.stop()
            raise _classify(exc) from exc
        if self.error is not None:
            await self.stop()
            raise self.error
        self._task = asyncio.create_task(self._loop(), name=f"watch-{self.function}")
        log.info("watching %s", ", ".join(str(c.durable_name) for c in self.consumers.values()))

    async def stop(self) -> None:
        # nats-py can swallow a cancellation (in its flush), so the loop also checks a flag.
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            await end_task(task)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _ensure(self) -> None:
        try:
            await ensure_streams(self.js, self.worker)
        except TopologyMismatch as exc:
            log.warning("watching an existing stream that differs from the settings: %s", exc)
        for config in self.consumers.values():
            assert config.durable_name is not None
            try:
                info = await self.js.consumer_info(JOBS_STREAM, config.durable_name)
            except NotFoundError:
                await self.js.add_consumer(JOBS_STREAM, config=config)
                log.info("created consumer %s", config.durable_name)
            else:  # an earlier version's filter: set to the open subject
                await upgrade_consumer(self.js, config, info)

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValidationError:
            log.warning("ignoring a malformed heartbeat on %s", msg.subject)
            return
        self.replicas.observe(beat, self.clock(), saturated=self.pending > 0)

    async def _loop(self) -> None:
        interval = self.settings.poll_interval_s
        while not self._stopping:
            started = self.clock()
            if started - self._tenants_at >= self.settings.plan_refresh_s:
                await self.follow_tenants()
            await self.poll()
            if started - self._plans_at >= self.settings.plan_refresh_s:
                self._plans_at = started
                await self._refresh_plans()
            await asyncio.sleep(max(0.0, interval - (self.clock() - started)))

    async def follow_tenants(self) -> None:
        """List the tenants now; create the function's consumers on a new one's stream."""
        self._tenants_at = self.clock()
        try:
            found = await list_tenants(self.js)
        except Exception as exc:
            log.warning("could not list the tenants, still watching %s: %r", self.tenants, exc)
            return
        tenants = []
        for tenant in found:
            if tenant not in self.tenants and not await self._attach(tenant):
                continue
            tenants.append(tenant)
        if tuple(tenants) != self.tenants:
            log.info("%s: watching tenants %s", self.function, tenants)
        self.tenants = tuple(tenants)
        self._refused &= set(found)
        kept = {JOBS_STREAM, *(tenant_stream(t) for t in found)}
        self._arrived_by = {k: v for k, v in self._arrived_by.items() if k[0] in kept}

    async def _attach(self, tenant: str) -> bool:
        """Give the function its consumers on `tenant`'s stream; False when it cannot."""
        try:
            await ensure_tenant_consumers(self.js, self.worker, tenant)
        except NotFoundError:  # removed since the listing
            return False
        except TopologyMismatch as exc:
            if tenant not in self._refused:
                log.warning("not counting tenant %s: %s", tenant, exc)
                self._refused.add(tenant)
            return False
        except Exception as exc:
            log.warning("could not watch tenant %s yet: %r", tenant, exc)
            return False
        return True

    async def _tenant_info(self, tenant: str, name: str) -> ConsumerInfo | None:
        """One consumer on `tenant`'s stream; None when it (or the stream) is gone."""
        try:
            info: ConsumerInfo = await self.js.consumer_info(
                tenant_stream(tenant), name, timeout=1.0
            )
        except NotFoundError:
            return None
        return info

    async def poll(self) -> None:
        """Look at the consumers once, update the state and wake `next_poll` waiters."""
        started = self.clock()
        names = [str(c.durable_name) for c in self.consumers.values()]
        tenants = self.tenants
        try:
            opened, *found = await asyncio.gather(
                asyncio.gather(
                    *(self.js.consumer_info(JOBS_STREAM, name, timeout=1.0) for name in names)
                ),
                *(self._tenant_info(t, name) for t in tenants for name in names),
            )
        except NotFoundError as exc:
            self._failed(WatchError(f"consumer or stream gone: {exc}", "internal"))
            with contextlib.suppress(Exception):
                await self._ensure()
        except Exception as exc:
            self._failed(_classify(exc))
        else:
            infos = {(JOBS_STREAM, name): i for name, i in zip(names, opened, strict=True)}
            gone: set[str] = set()
            pairs = [(t, name) for t in tenants for name in names]
            for (tenant, name), info in zip(pairs, found, strict=True):
                if info is None:
                    gone.add(tenant)
                else:
                    infos[(tenant_stream(tenant), name)] = info
            if gone:  # removed, or lost its consumers: re-list (and re-attach) next time
                log.info("tenants %s lost their streams or consumers", sorted(gone))
                self.tenants = tuple(t for t in self.tenants if t not in gone)
                self._tenants_at = float("-inf")
            self._update(infos, self.clock())
            M.poll_seconds.labels(self.function).observe(self.clock() - started)
        self._tick.set()
        self._tick = asyncio.Event()

    def _failed(self, error: WatchError) -> None:
        if self.error is None or str(self.error) != str(error):
            log.warning("%s", error)
        self.error = error
        M.polls.labels(self.function, error.code).inc()

    def _update(self, found: dict[tuple[str, str], ConsumerInfo], now: float) -> None:
        infos = list(found.values())
        self.pending = sum(i.num_pending or 0 for i in infos)
        self.ack_pending = sum(i.num_ack_pending or 0 for i in infos)
        self.retrying = sum(min(i.num_redelivered or 0, i.num_ack_pending or 0) for i in infos)
        if self.retrying == 0:
            self._retrying_since = None
        elif self._retrying_since is None:
            self._retrying_since = now
        self.arrivals.add(now, self._count_arrivals(found))
        self.replicas.expire(now)
        if self.error is not None:
            log.info("consumer state available again")
        self.error = None
        self.last_ok = now
        M.polls.labels(self.function, "ok").inc()
        M.pending.labels(self.function).set(self.pending)
        M.ack_pending.labels(self.function).set(self.ack_pending)
        M.retrying.labels(self.function).set(self.retrying)
        for state in WorkerState:
            M.workers.labels(self.function, state.value).set(self.replicas.count(state))

    def _count_arrivals(self, found: dict[tuple[str, str], ConsumerInfo]) -> int:
        """A cumulative arrival counter made of each consumer's increase, so that a
        tenant's consumers coming or going do not read as a burst or reset the rate."""
        first = self.last_ok is None
        for key, info in found.items():
            count = _arrived(info)
            before = self._arrived_by.get(key, count if first else 0)
            self._arrived_total += count - before if count >= before else count
            self._arrived_by[key] = count
        return self._arrived_total

    async def _refresh_plans(self) -> None:
        try:
            plans = await load_plans(self.js, self.function)
        except Exception as exc:
            log.warning("could not read pre-warm plans: %r", exc)
            return
        windows = tuple(p.window() for p in plans)
        if windows != self.windows:
            log.info("pre-warm plans for %s: %s", self.function, [p.id for p in plans])
        self.windows = windows

    async def refresh_plans(self) -> None:
        """Read the pre-warm plans now rather than at the next refresh."""
        await self._refresh_plans()

    def observation(self) -> Observation:
        """The latest state; `WatchError` when it is older than `stale_after_s`."""
        now = self.clock()
        if self.last_ok is None or now - self.last_ok > self.settings.stale_after_s:
            raise self.error or WatchError("no recent consumer state", "unavailable")
        since = self._retrying_since
        return Observation(
            pending=self.pending,
            ack_pending=self.ack_pending,
            retrying=self.retrying,
            retrying_for_s=0.0 if since is None else now - since,
            arrival_rate=self.arrivals.rate(now),
            throughput=self.replicas.throughput,
            cold_start_s=self.replicas.cold_start_s,
            warming_s=self.replicas.warming_ages(now),
        )

    async def next_poll(self, timeout: float) -> None:
        """Return after the next poll, or after `timeout` seconds."""
        tick = self._tick
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tick.wait(), timeout)
