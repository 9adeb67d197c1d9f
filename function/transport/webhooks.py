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
receiver does not hold up the others. Deliveries wait in memory only: a worker that dies
after storing a result and before its webhook is delivered loses the delivery (its record
stays `pending`, or was never written); the result itself is stored and its status shows
it. `stop()` gives queued deliveries a bounded time to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import NamedTuple

import httpx
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from function.contract.errors import clip
from function.contract.settings import Header, WorkerSettings
from function.contract.webhooks import (
    WEBHOOKS_BUCKET,
    WebhookRecord,
    WebhookState,
    sign,
    tenant_secret,
    webhook_key,
)

__all__ = ["WebhookSender", "open_webhooks_bucket", "read_webhook"]

log = logging.getLogger("surge.webhooks")

QUEUE_LIMIT = 10_000
MAX_ACTIVE = 64  # deliveries under way at once (each with its retries)
READ_TIMEOUT_S = 1.0
_ERROR_CHARS = 200


class _Delivery(NamedTuple):
    job_id: str
    tenant: str | None
    url: str
    body: bytes


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
    ) -> None:
        if settings.webhook_secret is None:
            raise ValueError("webhooks need a master secret: set SURGE_WEBHOOK_SECRET")
        self._master = settings.webhook_secret.get_secret_value().encode()
        self._js = nc.jetstream()
        self._settings = settings
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(limit)
        self._http = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False, transport=transport
        )
        self._bucket: KeyValue | None = None
        self._slots = asyncio.Semaphore(MAX_ACTIVE)
        self._active: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.clock: Callable[[], float] = time.time
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

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
        await self._record(delivery, WebhookRecord(url=delivery.url, state=WebhookState.PENDING))
        attempts = self._settings.webhook_attempts
        for attempt in range(1, attempts + 1):
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
        except httpx.HTTPError as exc:
            return None, clip(f"{type(exc).__name__}: {exc}", _ERROR_CHARS)
        if 200 <= response.status_code < 300:
            return response.status_code, ""
        return response.status_code, f"answered HTTP {response.status_code}"

    async def _record(self, delivery: _Delivery, record: WebhookRecord) -> None:
        """Write the delivery's record (a failed write is logged: the delivery goes on)."""
        try:
            if self._bucket is None:
                self._bucket = await open_webhooks_bucket(self._js, self._settings)
            key = webhook_key(delivery.job_id, delivery.tenant)
            await self._bucket.put(key, record.model_dump_json().encode())
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
        for task in [self._task, *self._active]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        await self._http.aclose()
