"""Results: store by job id, reply, look up, dead-letter; blobs in the Object Store.

A result is stored first on `surge.results.<job id>` (one message per subject, so a
client that was away can fetch it and a redelivered job is answered from there), then
published to the job's reply subject; the job is acked after that. Image
outputs too large to inline go to the `surge-blobs` bucket under
`results/<job id>/<name>` and the result carries the name.

Nothing published here can exceed the server's `max_payload`, headers included: a result
that does not fit moves its images to the bucket, or else becomes a short
`result_too_large` error; a dead letter that does not fit drops the original payload
(and then its copied headers), never the letter.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError, ServerError, ServiceUnavailableError
from nats.js.object_store import ObjectStore

from function.contract.bounds import message_size, quote
from function.contract.errors import BadInput, ErrorCode, TransientError
from function.contract.settings import (
    Header,
    dead_subject,
    result_subject,
    tenant_blob_bucket,
)
from function.contract.wire import DeadLetter, ErrorInfo, ImageOutput, JobStatus, Result
from function.telemetry import METRICS
from function.transport.acks import StreamWrites
from function.transport.records import read_record

__all__ = ["EncodedResult", "ResultStore", "encode_result", "fetch_result"]

log = logging.getLogger("surge.results")
STORE_TIMEOUT_S = 10.0
BLOB_TIMEOUT_S = 30.0
_HEADER_VALUE_CHARS = 256


async def fetch_result(
    js: JetStreamContext, job_id: str, tenant: str | None = None
) -> Result | None:
    """The stored result of `job_id` (a tenant's, when given), or None when there is none
    (yet, or any more). A direct get names the subject, so permissions can scope it."""
    record = await read_record(js, job_id, tenant)  # a ticket: queued, no result yet
    return record.result if record is not None else None


class EncodedResult(NamedTuple):
    """A result ready to store and send: its body, reply headers, stored headers."""

    job_id: str
    subject: str
    body: bytes
    headers: dict[str, str]
    stored_headers: dict[str, str]


def _scoped_id(kind: str, job_id: str, tenant: str | None) -> str:
    """A de-duplication id that no other tenant's job with the same id can take."""
    return f"{kind}.{tenant}.{job_id}" if tenant else f"{kind}-{job_id}"


def encode_result(result: Result, trace_headers: dict[str, str]) -> EncodedResult:
    """Body, reply headers, and the stored copy's headers (with its de-duplication id:
    one final result per job, whoever stores it)."""
    headers = {
        **trace_headers,
        Header.JOB_ID: result.job_id,
        Header.STATUS: result.status.value,
        Header.CONTENT_TYPE: "application/json",
    }
    if result.error is not None:
        headers[Header.ERROR_CODE] = result.error.code.value
    stored = {**headers, Header.MSG_ID: _scoped_id("result", result.job_id, result.tenant)}
    subject = result_subject(result.job_id, result.tenant)
    return EncodedResult(result.job_id, subject, result.model_dump_json().encode(), headers, stored)


class ResultStore:
    """Publishes, stores and looks up results for one worker."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        blobs: ObjectStore | None,
        *,
        inline_limit: int,
        max_input: int = 32 * 1024 * 1024,
        function: str = "",
    ) -> None:
        self._nc = nc
        self._js = js
        self._blobs = blobs
        self._inline_limit = inline_limit
        self._max_input = max_input
        self._function = function
        self._tenant_blobs: dict[str, ObjectStore] = {}
        self._writes = StreamWrites(nc)

    def fits(self, body: bytes, headers: dict[str, str] | None) -> bool:
        """Whether a message is within the server's `max_payload`, headers included."""
        return message_size(body, headers) <= self._nc.max_payload

    async def lookup(self, job_id: str, tenant: str | None = None) -> Result | None:
        return await fetch_result(self._js, job_id, tenant)

    async def _bucket(self, tenant: str | None) -> ObjectStore:
        """The bucket a job's inputs come from: its tenant's own, else the shared one."""
        if tenant is None:
            if self._blobs is None:
                raise BadInput(ErrorCode.INPUT_NOT_FOUND, "no blob store configured")
            return self._blobs
        if tenant not in self._tenant_blobs:
            try:
                bucket = tenant_blob_bucket(tenant)
                self._tenant_blobs[tenant] = await self._js.object_store(bucket)
            except NotFoundError as exc:
                raise BadInput(
                    ErrorCode.INPUT_NOT_FOUND, f"tenant {tenant} has no blob bucket"
                ) from exc
        return self._tenant_blobs[tenant]

    async def fetch_input(self, ref: str, tenant: str | None = None) -> bytes:
        """Read a job input from the blob bucket (a tenant's job: from its own bucket only);
        missing or unreadable is the client's error.

        Links are refused: nats-py follows them, past the size check of the link itself.
        """
        blobs = await self._bucket(tenant)
        try:
            info = await asyncio.wait_for(blobs.get_info(ref), BLOB_TIMEOUT_S)
            if info.options is not None and info.options.link is not None:
                raise BadInput(
                    ErrorCode.BAD_ENVELOPE, f"object {quote(ref)} is a link; send the object"
                )
            if info.size is not None and info.size > self._max_input:
                raise BadInput(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"object {quote(ref)} is {info.size} bytes, limit {self._max_input}",
                )
            obj = await asyncio.wait_for(blobs.get(ref), BLOB_TIMEOUT_S)
        except NotFoundError as exc:
            raise BadInput(
                ErrorCode.INPUT_NOT_FOUND, f"no object {quote(ref)} in the bucket"
            ) from exc
        except (TimeoutError, ServiceUnavailableError, ServerError) as exc:
            raise TransientError(f"reading object {quote(ref)} failed: {exc!r}") from exc
        except JetStreamError as exc:  # corrupt meta, digest mismatch, a bucket link...
            raise BadInput(
                ErrorCode.BAD_ENVELOPE, f"object {quote(ref)} is unreadable ({type(exc).__name__})"
            ) from exc
        data = obj.data or b""
        if len(data) > self._max_input:
            raise BadInput(ErrorCode.PAYLOAD_TOO_LARGE, f"object {quote(ref)} is over the limit")
        return data

    async def _offload(self, result: Result, *, force: bool = False) -> None:
        """Move inline images to the blob bucket when the result would be too large."""
        inline = sum(
            len(o.data) for o in result.outputs.values() if isinstance(o, ImageOutput) and o.data
        )
        if (inline <= self._inline_limit and not force) or self._blobs is None or not inline:
            return
        if result.tenant is not None:  # a tenant cannot read the bucket: keep it inline
            return
        for name, output in result.outputs.items():
            if isinstance(output, ImageOutput) and output.data is not None:
                ref = f"results/{result.job_id}/{name}"
                await self._blobs.put(ref, base64.b64decode(output.data))
                output.data, output.ref = None, ref

    async def publish(
        self, result: Result, reply_to: str | None, trace_headers: dict[str, str]
    ) -> EncodedResult:
        """Store the result (awaiting the stream's ack), then send it to `reply_to`; the
        result as stored.

        A failed reply is logged and counted, never raised: the stored result stands.
        """
        encoded = await self.encode(result, trace_headers)
        [failure] = await self.store_all([encoded])
        if failure is not None:
            raise failure
        await self.reply(reply_to, encoded)
        return encoded

    async def encode(self, result: Result, trace_headers: dict[str, str]) -> EncodedResult:
        """The result as it will be stored: images moved to the bucket when too large
        to inline, or a short `result_too_large` error when even that does not fit."""
        await self._offload(result)
        encoded = encode_result(result, trace_headers)
        if not self.fits(encoded.body, encoded.stored_headers):
            await self._offload(result, force=True)
            encoded = encode_result(result, trace_headers)
        if not self.fits(encoded.body, encoded.stored_headers):
            METRICS.oversized.labels(self._function, "result").inc()
            result = self._too_large(result, len(encoded.body))
            encoded = encode_result(result, trace_headers)
        return encoded

    async def store_all(self, results: Sequence[EncodedResult]) -> list[BaseException | None]:
        """Store every result, awaiting the stream's acks together: None for each one
        stored, else why not. Store first, reply after: a client never sees a result
        that is not the final one."""
        writes = [
            self._writes.write(encoded.subject, encoded.body, encoded.stored_headers)
            for encoded in results
        ]
        return await self._writes.settle_all(writes, STORE_TIMEOUT_S)

    async def ack_all(self, msgs: Sequence[Msg], timeout: float) -> list[BaseException | None]:
        """Ack every job message, awaiting the server's confirmations together: None for
        each confirmed, else why not (an ack is idempotent: send it again)."""
        return await self._writes.settle_all([self._writes.ack(msg) for msg in msgs], timeout)

    def _too_large(self, result: Result, size: int) -> Result:
        """The short error that replaces a result the server could not carry."""
        message = (
            f"the result is {size} bytes, over the server's max_payload of "
            f"{self._nc.max_payload}, and could not be moved to the blob store"
        )
        return result.model_copy(
            update={
                "status": JobStatus.ERROR,
                "outputs": {},
                "error": ErrorInfo(code=ErrorCode.RESULT_TOO_LARGE, message=message),
            }
        )

    async def reply(self, reply_to: str | None, encoded: EncodedResult) -> None:
        """Send a stored result to `reply_to` (a failure is logged and counted)."""
        await self._reply(reply_to, encoded.body, encoded.headers, encoded.job_id)

    async def _reply(
        self, reply_to: str | None, body: bytes, headers: dict[str, str], job_id: str
    ) -> None:
        if not reply_to:
            return
        try:
            await self._nc.publish(reply_to, body, headers=headers)
        except Exception as exc:
            METRICS.reply_failures.labels(self._function).inc()
            log.warning(
                "result stored, reply to %s failed: %r",
                quote(reply_to),
                exc,
                extra={"job_id": job_id},
            )

    async def resend(self, result: Result, reply_to: str | None) -> None:
        """Send an already stored result to `reply_to` again (a redelivered job)."""
        headers = {Header.JOB_ID: result.job_id, Header.STATUS: result.status.value}
        body = result.model_dump_json().encode()
        await self._reply(reply_to, body, headers, result.job_id)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Keep a job that ran out of attempts, with its last error, on the dead stream."""
        headers = {
            Header.JOB_ID: letter.job_id,
            Header.LAST_ERROR: letter.last_error.message[:512],
            Header.ATTEMPTS: str(letter.attempts),
            Header.ORIGINAL_SUBJECT: letter.original_subject[:_HEADER_VALUE_CHARS],
            Header.MSG_ID: _scoped_id("dead", letter.job_id, letter.tenant),
        }
        body = self._fitted(letter, headers)
        await self._js.publish(
            dead_subject(letter.function), body, headers=headers, timeout=STORE_TIMEOUT_S
        )
        log.warning(
            "dead-lettered after %d attempts: %s",
            letter.attempts,
            letter.last_error.message,
            extra={"job_id": letter.job_id},
        )

    def _fitted(self, letter: DeadLetter, headers: dict[str, str]) -> bytes:
        """The letter's body, without its payload, then its copied headers, if it must."""
        body = letter.model_dump_json().encode()
        if self.fits(body, headers):
            return body
        METRICS.oversized.labels(self._function, "dead_letter").inc()
        letter = letter.model_copy(update={"payload_b64": "", "payload_dropped": True})
        body = letter.model_dump_json().encode()
        if self.fits(body, headers):
            return body
        short = {k[:64]: v[:_HEADER_VALUE_CHARS] for k, v in list(letter.headers.items())[:32]}
        body = letter.model_copy(update={"headers": short}).model_dump_json().encode()
        if self.fits(body, headers):
            return body
        return letter.model_copy(update={"headers": {}}).model_dump_json().encode()
