"""`WebhookSender`: a job's final result POSTed, signed, to the URL the job asked for, and
each attempt recorded in the `surge-webhooks` bucket (`read_webhook` gives it back).

    POST <url>
    Content-Type: application/json
    Surge-Job-Id: <job id>
    Surge-Delivery: <uuid, the same on every attempt>
    Surge-Attempt: <1, 2, ...>
    Surge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>   (`function.contract.webhooks`)

    <the result JSON, the exact bytes stored on surge.results.[<tenant>.]<job id>>

A 2xx answer delivers it; anything else (another status, a redirect, which is never
followed, a timeout, a refused connection) is tried again after `webhook_backoff_s`,
doubled each time, up to `webhook_attempts` POSTs; then it is `failed`. The record, one
`WebhookRecord` per job under `<tenant or _open>.<job id>`, says where it stands; the
bucket is made on first use and keeps records as long as results (`results_max_age_s`).

Off the job's path: `send()` only queues (a full queue drops the delivery and logs it);
one task takes deliveries from the queue and runs up to `MAX_ACTIVE` at once, so a slow
receiver does not hold up the others. `stop()` gives queued deliveries a bounded time.

No delivery is lost with its worker: before a job is acked, `hold()` writes its delivery
to the bucket's outbox (`OUTBOX.<tenant or _open>.<job id>`: the URL, no body), renewed
at every attempt and removed once delivered or failed. Every worker sweeps the outbox
(at start, then every `SWEEP_S`): an entry not renewed for `stale_s` (the longest a live
delivery waits between attempts, with a margin) belonged to a worker that died; it is
claimed (a revision-checked update: one worker wins) and delivered again from the result
stored on its results subject, the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from function.contract.errors import clip
from function.contract.settings import RESULTS_STREAM, Header, WorkerSettings, result_subject
from function.contract.webhooks import (
    WEBHOOKS_BUCKET,
    WebhookRecord,
    WebhookState,
    sign,
    tenant_secret,
    webhook_key,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["OutboxEntry", "WebhookSender", "open_webhooks_bucket", "outbox_key", "read_webhook"]

log = logging.getLogger("surge.webhooks")

OUTBOX = "OUTBOX"
SWEEP_S = 30.0  # how often a worker looks for deliveries a dead worker left
QUEUE_LIMIT = 10_000
MAX_ACTIVE = 64  # deliveries under way at once (each with its retries)
READ_TIMEOUT_S = 1.0
_ERROR_CHARS = 200


class _Delivery(NamedTuple):
    job_id: str
    tenant: str | None
    url: str
    body: bytes


class OutboxEntry(BaseModel):
    """A delivery owed: written before its job is acked, removed when it ends."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    tenant: str | None = None
    url: str
    worker: str = ""


def outbox_key(job_id: str, tenant: str | None) -> str:
    """The outbox key of a job's delivery (upper case: no tenant key can start so)."""
    return f"{OUTBOX}.{webhook_key(job_id, tenant)}"


async def open_webhooks_bucket(js: JetStreamContext, settings: WorkerSettings) -> KeyValue:
    """The `surge-webhooks` bucket, made when missing (records live as long as results)."""
    try:
        return await js.key_value(WEBHOOKS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            bucket=WEBHOOKS_BUCKET,
            history=1,
            ttl=settings.results_max_age_s,
            replicas=settings.stream_replicas,
            direct=True,
        )


async def read_webhook(
    js: JetStreamContext, job_id: str, tenant: str | None, timeout: float = READ_TIMEOUT_S
) -> WebhookRecord | None:
    """A job's webhook record, or None: no webhook asked, no bucket yet, or unreadable
    (best effort: a status is answered without it)."""
    subject = f"$KV.{WEBHOOKS_BUCKET}.{webhook_key(job_id, tenant)}"
    try:
        raw = await asyncio.wait_for(
            js.get_last_msg(f"KV_{WEBHOOKS_BUCKET}", subject, direct=True), timeout
        )
    except Exception:  # not found, no bucket, not allowed, no answer: no record to show
        return None
    try:
        return WebhookRecord.model_validate_json(raw.data or b"")
    except ValidationError:
        return None


class WebhookSender:
    """Delivers one worker's webhooks from a bounded queue; needs `webhook_secret`."""

    def __init__(
        self,
        nc: NATS,
        settings: WorkerSettings,
        *,
        limit: int = QUEUE_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
        worker: str = "",
        stale_s: float | None = None,
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("webhooks need a master secret: set SURGE_WEBHOOK_SECRET")
        self._master = settings.webhook_secret.get_secret_value().encode()
        self._js = nc.jetstream()
        self._settings = settings
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(limit)
        import httpx  # here, not at import: only a worker with a webhook secret needs it

        self._http_error = httpx.HTTPError
        self._http = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False, transport=transport
        )
        self._bucket: KeyValue | None = None
        self._slots = asyncio.Semaphore(MAX_ACTIVE)
        self._active: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.clock: Callable[[], float] = time.time
        self.dropped = 0
        self.recovered = 0
        self._worker = worker
        # A live delivery renews its entry at every attempt: the longest gap is the last
        # backoff plus one POST's timeout; twice that, and a margin, means its worker died.
        longest = settings.webhook_backoff_s * 2 ** max(settings.webhook_attempts - 2, 0)
        self._stale_s = (
            stale_s if stale_s is not None else 2 * (longest + settings.webhook_timeout_s) + 10
        )
        self._delivering: set[str] = set()  # outbox keys this worker is delivering
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._sweeper = loop.create_task(self._sweep_loop())

    async def hold(self, deliveries: list[tuple[str, str | None, str, bytes]]) -> None:
        """Write each delivery (job id, tenant, url, stored body) to the outbox, then queue
        it: call before acking the jobs, so a worker dying now leaves them to another."""
        if not deliveries:
            return
        held = await asyncio.gather(
            *(self._renew(_Delivery(*d)) for d in deliveries), return_exceptions=True
        )
        for delivery, outcome in zip(deliveries, held, strict=True):
            if isinstance(outcome, BaseException):  # delivered from memory all the same
                log.warning("webhook not held in the outbox: %r", outcome)
            self.send(*delivery)

    async def _bucket_now(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await open_webhooks_bucket(self._js, self._settings)
        return self._bucket

    async def _renew(self, delivery: _Delivery) -> None:
        """(Re)write the delivery's outbox entry: it is owed, and alive."""
        entry = OutboxEntry(
            job_id=delivery.job_id, tenant=delivery.tenant, url=delivery.url, worker=self._worker
        )
        key = outbox_key(delivery.job_id, delivery.tenant)
        await (await self._bucket_now()).put(key, entry.model_dump_json().encode())

    async def _release(self, delivery: _Delivery) -> None:
        """The delivery ended (delivered or failed): nothing is owed any more."""
        key = outbox_key(delivery.job_id, delivery.tenant)
        self._delivering.discard(key)
        try:
            await (await self._bucket_now()).delete(key)
        except Exception as exc:  # a sweep will find it delivered-or-failed and drop it
            log.debug("outbox entry not removed: %r", exc)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # no bucket yet, NATS away: the next sweep tries again
                log.debug("outbox sweep failed: %r", exc)
            await asyncio.sleep(SWEEP_S)

    async def sweep(self) -> int:
        """Claim and deliver again every outbox entry not renewed for `stale_s`; the
        number claimed."""
        try:
            bucket = await self._js.key_value(WEBHOOKS_BUCKET)
        except BucketNotFoundError:
            return 0
        watcher = await bucket.watch(f"{OUTBOX}.>", ignore_deletes=True)
        stale: list[KeyValue.Entry] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                age = time.time() - entry.created.timestamp() if entry.created else 0.0
                if entry.key not in self._delivering and age >= self._stale_s:
                    stale.append(entry)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        claimed = 0
        for entry in stale:
            claimed += await self._claim(bucket, entry)
        return claimed

    async def _claim(self, bucket: KeyValue, entry: KeyValue.Entry) -> int:
        try:
            owed = OutboxEntry.model_validate_json(entry.value or b"")
        except ValidationError:
            await bucket.delete(entry.key)  # not an entry Surge wrote
            return 0
        mine = owed.model_copy(update={"worker": self._worker})
        try:  # only if nobody renewed or claimed it since it was read
            await bucket.update(entry.key, mine.model_dump_json().encode(), last=entry.revision)
        except Exception:
            return 0
        self._delivering.add(entry.key)  # claimed: no later sweep of this worker takes it
        subject = result_subject(owed.job_id, owed.tenant)
        try:
            raw = await self._js.get_last_msg(RESULTS_STREAM, subject, direct=True)
        except Exception:  # the result is gone (expired): nothing to deliver
            await bucket.delete(entry.key)
            return 0
        log.info("delivering a webhook a stopped worker owed", extra={"job_id": owed.job_id})
        self.recovered += 1
        self.send(owed.job_id, owed.tenant, owed.url, raw.data or b"")
        return 1

    def send(self, job_id: str, tenant: str | None, url: str, body: bytes) -> None:
        """Queue the delivery of `body` (a stored result) to `url` (never blocks)."""
        try:
            self._queue.put_nowait(_Delivery(job_id, tenant, url, body))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full: delivery dropped", extra={"job_id": job_id})

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._active.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._slots.release()
        self._queue.task_done()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed: %r", task.exception())

    async def _deliver(self, delivery: _Delivery) -> None:
        """POST until delivered or out of attempts, recording each outcome."""
        secret = tenant_secret(self._master, delivery.tenant)
        delivery_id = uuid.uuid4().hex
        key = outbox_key(delivery.job_id, delivery.tenant)
        self._delivering.add(key)
        try:
            await self._attempts(delivery, secret, delivery_id)
        except BaseException:  # stopped (or broken) mid-way: the outbox keeps it for a sweep
            self._delivering.discard(key)
            raise
        await self._release(delivery)

    async def _attempts(self, delivery: _Delivery, secret: bytes, delivery_id: str) -> None:
        await self._record(delivery, WebhookRecord(url=delivery.url, state=WebhookState.PENDING))
        attempts = self._settings.webhook_attempts
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                with contextlib.suppress(Exception):  # alive: not for a sweep to take
                    await self._renew(delivery)
            status, error = await self._post(delivery, secret, delivery_id, attempt)
            if not error:
                state = WebhookState.DELIVERED
            else:
                state = WebhookState.FAILED if attempt == attempts else WebhookState.PENDING
            record = WebhookRecord(
                url=delivery.url,
                state=state,
                attempts=attempt,
                last_status=status,
                last_error=error,
            )
            await self._record(delivery, record)
            if state is not WebhookState.PENDING:
                if state is WebhookState.FAILED:
                    log.warning(
                        "webhook failed after %d attempts: %s",
                        attempt,
                        error,
                        extra={"job_id": delivery.job_id},
                    )
                return
            await asyncio.sleep(self._settings.webhook_backoff_s * 2 ** (attempt - 1))

    async def _post(
        self, delivery: _Delivery, secret: bytes, delivery_id: str, attempt: int
    ) -> tuple[int | None, str]:
        """One POST: (HTTP status or None, why it failed or "")."""
        headers = {
            Header.CONTENT_TYPE: "application/json",
            Header.JOB_ID: delivery.job_id,
            Header.DELIVERY: delivery_id,
            Header.ATTEMPT: str(attempt),
            Header.SIGNATURE: sign(secret, int(self.clock()), delivery.body),
        }
        try:
            response = await self._http.post(delivery.url, content=delivery.body, headers=headers)
        except self._http_error as exc:
            return None, clip(f"{type(exc).__name__}: {exc}", _ERROR_CHARS)
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"answered HTTP {response.status_code}"

    async def _record(self, delivery: _Delivery, record: WebhookRecord) -> None:
        """Write the delivery's record (a failed write is logged: the delivery goes on)."""
        try:
            key = webhook_key(delivery.job_id, delivery.tenant)
            await (await self._bucket_now()).put(key, record.model_dump_json().encode())
        except Exception as exc:
            log.warning("webhook record not written: %r", exc, extra={"job_id": delivery.job_id})

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish queued and running deliveries for at most `timeout`, then stop (those
        left are lost, and logged)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        left = self._queue.qsize() + len(self._active)
        if left:
            log.warning("stopping with %d webhook deliveries undone: they are lost", left)
        self._task.cancel()
        for task in [self._task, *self._active, *([self._sweeper] if self._sweeper else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        await self._http.aclose()
