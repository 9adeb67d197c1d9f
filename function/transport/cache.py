"""The opt-in result cache (`SURGE_CACHE`): the same work is never done twice.

An entry in the `surge-cache` KV bucket names the job whose stored result answers an
input: its key is `<tenant or OPEN>.<function>.<sha256 of model version, requested
outputs and input bytes>`, its value a `CacheEntry`. The result itself stays on the
results stream (read with `fetch_result`, the same tenant's only), so an entry never
outlives the result it points to: a hit whose result expired is a miss, and the entry
goes. A tenant's entries carry its name in the key and the value, and both are checked:
a cached result is never served to another tenant.

The bucket is made on first use, bounded by `cache_max_bytes` (the oldest entries go
first when full) and `cache_max_age_s`. Writes are best effort, from a bounded queue
off the job's path: a failed write never fails a job, and a failed read is a miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from function.contract.settings import WorkerSettings
from function.contract.wire import JobStatus, Result
from function.transport.storage import fetch_result

__all__ = ["CACHE_BUCKET", "CacheEntry", "ResultCache", "cache_key"]

log = logging.getLogger("surge.cache")

CACHE_BUCKET = "surge-cache"
OPEN = "OPEN"  # the key part of jobs without a tenant (upper case: no tenant is named so)
QUEUE_LIMIT = 1_000  # entries waiting to be written; past it, new ones are dropped
READ_TIMEOUT_S = 1.0

REQUESTS = Counter(
    "surge_cache_requests_total",
    "Result cache lookups: hit, miss, or expired (its entry's result was gone).",
    ["function", "outcome"],
)
WRITES = Counter(
    "surge_cache_writes_total",
    "Result cache entries written, dropped (queue full) or failed.",
    ["function", "outcome"],
)


class CacheEntry(BaseModel):
    """The value of a cache key: the job whose stored result answers it."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    tenant: str | None = None
    function: str
    model_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def cache_key(
    tenant: str | None, function: str, model_version: str, outputs: Iterable[str], data: bytes
) -> str:
    """The key of an input: its tenant and function in clear, then a hash of the model
    version, the sorted requested outputs and the input bytes."""
    digest = hashlib.sha256()
    for part in (model_version, *sorted(outputs)):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(data)
    return f"{tenant or OPEN}.{function}.{digest.hexdigest()}"


class ResultCache:
    """One worker's view of the cache: look up before decoding, remember after storing."""

    def __init__(self, js: JetStreamContext, settings: WorkerSettings, model_version: str) -> None:
        self._js = js
        self._settings = settings
        self._function = settings.function
        self._version = model_version
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()
        self._queue: asyncio.Queue[tuple[str, CacheEntry]] = asyncio.Queue(QUEUE_LIMIT)
        self._writer: asyncio.Task[None] | None = None

    def key(self, tenant: str | None, outputs: Iterable[str], data: bytes) -> str:
        return cache_key(tenant, self._function, self._version, outputs, data)

    def use_version(self, model_version: str) -> None:
        """Key lookups and entries by `model_version` from now on (a rollout swapped the
        stable version): what an older version computed is never an answer again."""
        self._version = model_version

    async def _bucket(self) -> KeyValue:
        """The `surge-cache` bucket, made when missing: discard-old (a KV bucket made by
        the client library refuses new writes when full instead)."""
        async with self._opening:
            if self._kv is None:
                try:
                    self._kv = await self._js.key_value(CACHE_BUCKET)
                except BucketNotFoundError:
                    with contextlib.suppress(Exception):  # made meanwhile by another worker
                        await self._js.add_stream(self._stream_config())
                    self._kv = await self._js.key_value(CACHE_BUCKET)
            return self._kv

    def _stream_config(self) -> StreamConfig:
        settings = self._settings
        return StreamConfig(
            name=f"KV_{CACHE_BUCKET}",
            subjects=[f"$KV.{CACHE_BUCKET}.>"],
            max_msgs_per_subject=1,
            max_bytes=settings.cache_max_bytes,
            max_age=settings.cache_max_age_s,
            discard=DiscardPolicy.OLD,
            num_replicas=settings.stream_replicas,
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=True,
            duplicate_window=min(120.0, settings.cache_max_age_s),
        )

    async def lookup(self, key: str, tenant: str | None) -> Result | None:
        """The stored ok result that answers `key` for `tenant`, or None (a miss)."""
        try:
            outcome, result = await self._lookup(key, tenant)
        except Exception as exc:  # no bucket, not allowed, no answer: compute it
            log.warning("cache lookup failed (computing it): %r", exc)
            outcome, result = "miss", None
        REQUESTS.labels(self._function, outcome).inc()
        return result

    async def _lookup(self, key: str, tenant: str | None) -> tuple[str, Result | None]:
        kv = await self._bucket()
        try:
            raw = await asyncio.wait_for(kv.get(key), READ_TIMEOUT_S)
        except KeyNotFoundError:
            return "miss", None
        try:
            entry = CacheEntry.model_validate_json(raw.value or b"")
        except ValidationError:
            return "miss", None
        if (entry.tenant, entry.function, entry.model_version) != (
            tenant,
            self._function,
            self._version,
        ):
            return "miss", None  # never another tenant's (nor function's, nor model's)
        result = await fetch_result(self._js, entry.job_id, tenant)
        if result is None or result.status is not JobStatus.OK or result.tenant != tenant:
            with contextlib.suppress(Exception):
                await kv.delete(key)
            return "expired", None
        return "hit", result

    def remember(self, key: str, job_id: str, tenant: str | None) -> None:
        """Queue an entry for `key` pointing at `job_id`'s stored result (dropped when
        the queue is full: a cache write never holds a job up)."""
        entry = CacheEntry(
            job_id=job_id, tenant=tenant, function=self._function, model_version=self._version
        )
        try:
            self._queue.put_nowait((key, entry))
        except asyncio.QueueFull:
            WRITES.labels(self._function, "dropped").inc()

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        while True:
            key, entry = await self._queue.get()
            try:
                kv = await self._bucket()
                await kv.put(key, entry.model_dump_json().encode())
                WRITES.labels(self._function, "stored").inc()
            except Exception as exc:
                WRITES.labels(self._function, "failed").inc()
                log.warning("cache write failed: %r", exc)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        """Wait until the queued entries are written (or failed)."""
        if self._writer is not None and not self._writer.done():
            await self._queue.join()

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most `timeout`), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
