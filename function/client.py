"""A small client for publishing jobs and collecting results (used by the CLI and tests).

    async with await SurgeClient.connect("nats://127.0.0.1:4222") as client:
        inbox = await client.inbox()
        job_id = await client.submit(Path("photo.png").read_bytes(), reply_to=inbox.subject)
        results = await inbox.wait([job_id], timeout=30)

Any NATS client can do the same: publish to `surge.jobs.<priority>.<function>` with
`Nats-Msg-Id`, `Content-Type` and `Surge-Reply-To` headers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import APIError, NoStreamResponseError
from nats.js.object_store import ObjectStore
from opentelemetry import trace

from function.contract.errors import SurgeError
from function.contract.lifecycle import JobTicket
from function.contract.nats_auth import NatsAuth
from function.contract.parse import (
    is_valid_job_id,
    job_headers,
    msg_id_for,
    parse_subject,
    sniff_image_type,
    tenant_blob_prefix,
)
from function.contract.quota import QuotaExceeded, quota_refused
from function.contract.settings import (
    DEFAULT_FUNCTION,
    Header,
    Priority,
    WorkerSettings,
    is_valid_tenant,
    job_subject,
    tenant_blob_bucket,
    tenant_inbox_prefix,
)
from function.contract.wire import ImageOutput, JobEnvelope, Result
from function.telemetry import trace_headers
from function.transport.connect import open_nats
from function.transport.inbox import ResultInbox
from function.transport.records import write_ticket
from function.transport.storage import fetch_result
from function.transport.topology import ensure_blob_store, ensure_streams

__all__ = ["ResultInbox", "SurgeClient", "new_job_id"]

_tracer = trace.get_tracer("surge.client")
log = logging.getLogger("surge.client")
_ACK_TIMEOUT_S = 5.0  # for the stream's acknowledgement of a submitted job (nats-py's)
_NO_STREAM_WAIT_S = 5.0  # how long a submit waits out a stream with no leader (an election)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _check_tenant(tenant: str | None) -> None:
    if tenant is not None and not is_valid_tenant(tenant):
        raise ValueError(f"tenant {tenant!r}: lower-case letters, digits, '-' and '_'")


class SurgeClient:
    """Publishes jobs to JetStream and reads results."""

    def __init__(
        self,
        nc: NATS,
        *,
        own_connection: bool = False,
        tenant: str | None = None,
        tickets: bool | None = None,
    ) -> None:
        """`tickets`: write a ticket for each job submitted (None: only without a tenant,
        whose NATS user may not; True: always, for the worker submitting on its behalf)."""
        _check_tenant(tenant)
        self.tenant = tenant
        self._tickets = tickets if tickets is not None else tenant is None
        self.nc = nc
        self.js = nc.jetstream()
        self._own = own_connection
        self._call_inbox: ResultInbox | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        auth: NatsAuth | None = None,
        *,
        tenant: str | None = None,
        wait_s: float = 10.0,
    ) -> SurgeClient:
        """Connect with `auth` (default: the `SURGE_NATS_*` environment); see `open_nats`.

        A `tenant`'s client publishes on its tenant's job subjects, receives replies on
        `_INBOX_<tenant>.>` and reads `surge.results.<tenant>.>`: what its NATS user may do.
        """
        _check_tenant(tenant)
        prefix = tenant_inbox_prefix(tenant) if tenant else None
        nc = await open_nats(url, auth, name="surge-client", wait_s=wait_s, inbox_prefix=prefix)
        return cls(nc, own_connection=True, tenant=tenant)

    async def __aenter__(self) -> SurgeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._own:
            await self.nc.drain()

    async def inbox(self) -> ResultInbox:
        return await ResultInbox(self.nc, self.nc.new_inbox(), self.result).start()

    async def submit(
        self,
        image: bytes,
        *,
        function: str = DEFAULT_FUNCTION,
        priority: Priority | str = Priority.NORMAL,
        job_id: str | None = None,
        content_type: str | None = None,
        outputs: Iterable[str] = (),
        reply_to: str | None = None,
        deadline: datetime | None = None,
        webhook: str | None = None,
    ) -> str:
        """Publish one job (by Object Store reference when over the payload limit); return
        its id once JetStream has stored it. `webhook`: a URL its result is POSTed to."""
        job_id, subject, payload, headers = await self._job(
            image, function, priority, job_id, content_type, outputs, reply_to, deadline, webhook
        )
        with _tracer.start_as_current_span("surge.submit", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("surge.job_id", job_id)
            headers.update(trace_headers())
            stored = await self._store_patiently(subject, payload, headers)
            await self._ticket(job_id, function, priority, stored, reply_to, self.tenant)
        return job_id

    async def _store_patiently(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[str, int]:
        """`_store`, through a stream nobody made yet (an open job: made here, as a worker
        would) or a stream electing its leader (a cluster: no responder for a moment),
        for up to `_NO_STREAM_WAIT_S`; a tenant's refusal says more and is raised."""
        deadline = time.monotonic() + _NO_STREAM_WAIT_S
        made = False
        pause = 0.05
        while True:
            try:
                return await self._store(subject, payload, headers, _ACK_TIMEOUT_S)
            except NoStreamResponseError:
                if time.monotonic() >= deadline:
                    raise
                if not made:  # no worker ever ran: create the streams
                    await ensure_streams(self.js, WorkerSettings())
                    made = True
                    continue
                await asyncio.sleep(pause)  # a leader election: try again shortly
                pause = min(pause * 2, 1.0)

    async def resubmit(
        self, payload: bytes, subject: str, headers: Mapping[str, str], job_id: str
    ) -> bool:
        """Publish a job again as it was first sent (a dead letter's payload, job subject
        and headers) under the new id `job_id`, with its ticket. False, and nothing
        written, when JetStream already holds a job with that id (de-duplicated)."""
        if not is_valid_job_id(job_id):
            raise ValueError(f"job id {job_id!r}: one NATS subject token")
        job = parse_subject(subject)  # BadInput when it is not a job subject
        sent = {k: v for k, v in headers.items() if k != Header.MSG_ID}
        sent[Header.MSG_ID] = msg_id_for(job_id, job.tenant)
        with _tracer.start_as_current_span("surge.resubmit", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("surge.job_id", job_id)
            sent.update(trace_headers())
            answer = await self._ack(subject, payload, sent, _ACK_TIMEOUT_S)
            if answer.get("duplicate"):
                return False
            stored = str(answer.get("stream", "")), int(answer.get("seq", 0))
            reply_to = headers.get(Header.REPLY_TO)
            await self._ticket(job_id, job.function, job.priority, stored, reply_to, job.tenant)
        return True

    async def _ticket(
        self,
        job_id: str,
        function: str,
        priority: Priority | str,
        stored: tuple[str, int],
        reply_to: str | None,
        tenant: str | None = None,
    ) -> None:
        """Record the job on its results subject, so `status` and `cancel` can find its
        message (a result that came first is kept; a refused write is only logged).

        A tenant's user may not write under `surge.results.` (only workers do): its jobs
        are followed through the worker's HTTP API, which writes on its behalf.
        """
        if not self._tickets:
            return
        stream, sequence = stored
        ticket = JobTicket(
            job_id=job_id,
            function=function,
            priority=Priority(priority),
            tenant=tenant,
            stream=stream,
            sequence=sequence,
            reply_to=reply_to,
        )
        try:
            await write_ticket(self.js, ticket)
        except Exception as exc:  # the job is queued all the same
            log.warning("job %s queued, but its ticket was not written: %r", job_id, exc)

    async def _store(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[str, int]:
        """Publish and await the stream's acknowledgement, raising what a refusal means;
        (stream, sequence) of the stored job."""
        answer = await self._ack(subject, payload, headers, timeout)
        return str(answer.get("stream", "")), int(answer.get("seq", 0))

    async def _ack(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        """Publish and return the stream's acknowledgement, raising what a refusal means.

        (nats-py's `publish_async` never resolves on an error acknowledgement, such as a
        tenant's quota: its handler raises instead of failing the future.)
        """
        try:
            reply = await self.nc.request(subject, payload, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise self._refusal(NoStreamResponseError()) from None
        answer = json.loads(reply.data or b"{}")
        if isinstance(answer, dict) and "error" in answer:
            try:
                APIError.from_error(answer["error"])  # raises the matching APIError
            except APIError as exc:
                raise self._refusal(exc) from exc
            raise APIError(description=str(answer["error"]))
        if not isinstance(answer, dict):
            raise APIError(description="unreadable acknowledgement")
        return answer

    def _refusal(self, exc: Exception) -> Exception:
        """What a refused publish means for this client: a tenant's quota, its missing
        stream, or the server's own error."""
        quota = quota_refused(exc.err_code) if isinstance(exc, APIError) else None
        if self.tenant is not None and quota is not None:
            detail = getattr(exc, "description", None) or "refused by the server"
            return QuotaExceeded(self.tenant, quota, detail)
        if self.tenant is not None and isinstance(exc, NoStreamResponseError):
            return SurgeError(
                f"tenant {self.tenant} has no jobs stream on this server: "
                f"an operator adds it with `surge tenants add {self.tenant}`"
            )
        return exc

    async def call(
        self,
        image: bytes,
        *,
        function: str = DEFAULT_FUNCTION,
        priority: Priority | str = Priority.HIGH,
        outputs: Iterable[str] = (),
        timeout: float = 60.0,
    ) -> Result:
        """Submit one job and return its result: the request/response way to use Surge.

        The stream's acknowledgement is awaited alongside the result, not before it, and
        no ticket is written (the caller follows the job itself), so a round trip costs
        two JetStream writes less than `submit` followed by a wait.
        """
        if self._call_inbox is None:
            self._call_inbox = await self.inbox()
        inbox = self._call_inbox
        job_id, subject, payload, headers = await self._job(
            image, function, priority, None, None, outputs, inbox.subject, None
        )
        arrived = inbox.expect(job_id)
        with _tracer.start_as_current_span("surge.submit", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("surge.job_id", job_id)
            headers.update(trace_headers())
            stored = asyncio.ensure_future(self._store(subject, payload, headers, timeout))
        try:  # no ticket: its caller follows it (`status` knows it by its result)
            await stored
            return await asyncio.wait_for(arrived, timeout)
        except TimeoutError:
            found = await self.result(job_id)
            if found is None:
                raise
            return found
        finally:
            inbox.results.pop(job_id, None)
            inbox.received_at.pop(job_id, None)

    async def _job(
        self,
        image: bytes,
        function: str,
        priority: Priority | str,
        job_id: str | None,
        content_type: str | None,
        outputs: Iterable[str],
        reply_to: str | None,
        deadline: datetime | None,
        webhook: str | None = None,
    ) -> tuple[str, str, bytes, dict[str, str]]:
        """(job id, subject, payload, headers) for one job; large inputs go to the bucket."""
        job_id = job_id or new_job_id()
        if not is_valid_job_id(job_id):
            raise ValueError(
                f"job id {job_id!r}: one NATS subject token, no '.', '*', '>' or spaces"
            )
        content_type = content_type or sniff_image_type(image) or "application/octet-stream"
        headers = job_headers(
            job_id,
            content_type=content_type,
            reply_to=reply_to,
            deadline=deadline,
            outputs=outputs,
            tenant=self.tenant,
            webhook=webhook,
        )
        payload = image
        if len(image) > self.nc.max_payload - 4096:
            ref = f"{tenant_blob_prefix(self.tenant) if self.tenant else ''}inputs/{job_id}"
            store = await self._blobs()
            await store.put(ref, image)
            envelope = JobEnvelope(image_ref=ref, content_type=content_type)
            payload = envelope.model_dump_json(exclude_none=True).encode()
            headers[Header.CONTENT_TYPE] = "application/json"
        return job_id, job_subject(priority, function, self.tenant), payload, headers

    async def _blobs(self) -> ObjectStore:
        if self.tenant is not None:  # a tenant's own bucket, made with its stream
            return await self.js.object_store(tenant_blob_bucket(self.tenant))
        return await ensure_blob_store(self.js, WorkerSettings())

    async def result(self, job_id: str) -> Result | None:
        """The stored result of a job, if any."""
        return await fetch_result(self.js, job_id, self.tenant)

    async def output_bytes(self, output: ImageOutput) -> bytes:
        """An image output's bytes, inline or from the Object Store."""
        if output.data is not None:
            return base64.b64decode(output.data)
        assert output.ref is not None
        store = await self._blobs()
        return (await store.get(output.ref)).data or b""
