"""Results: store by job id, reply, look up, dead-letter; blobs in the Object Store.

A result is stored first on `surge.results.<job id>` (one message per subject, so a
client that was away can fetch it and a redelivered job is answered from there), then
published to the job's reply subject; the job is acked after that. Image
outputs too large to inline go to the `surge-blobs` bucket under
`results/<job id>/<name>` and the result carries the name.
"""

from __future__ import annotations

import asyncio
import base64
import logging

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from function.errors import BadInput, ErrorCode, TransientError
from function.jobs import DeadLetter, ImageOutput, Result
from function.settings import (
    RESULTS_STREAM,
    Header,
    dead_subject,
    result_subject,
)

__all__ = ["ResultStore", "fetch_result"]

log = logging.getLogger("surge.results")
STORE_TIMEOUT_S = 10.0
BLOB_TIMEOUT_S = 30.0


async def fetch_result(js: JetStreamContext, job_id: str) -> Result | None:
    """The stored result of `job_id`, or None when there is none (yet, or any more)."""
    try:
        raw = await js.get_last_msg(RESULTS_STREAM, result_subject(job_id), direct=True)
    except NotFoundError:
        return None
    assert raw.data is not None
    return Result.model_validate_json(raw.data)


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
    ) -> None:
        self._nc = nc
        self._js = js
        self._blobs = blobs
        self._inline_limit = inline_limit
        self._max_input = max_input

    async def lookup(self, job_id: str) -> Result | None:
        return await fetch_result(self._js, job_id)

    async def fetch_input(self, ref: str) -> bytes:
        """Read a job input from the blob bucket; missing is the client's error."""
        if self._blobs is None:
            raise BadInput(ErrorCode.INPUT_NOT_FOUND, "no blob store configured")
        try:
            info = await asyncio.wait_for(self._blobs.get_info(ref), BLOB_TIMEOUT_S)
            if info.size is not None and info.size > self._max_input:
                raise BadInput(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"object {ref!r} is {info.size} bytes, limit {self._max_input}",
                )
            obj = await asyncio.wait_for(self._blobs.get(ref), BLOB_TIMEOUT_S)
        except NotFoundError as exc:
            raise BadInput(ErrorCode.INPUT_NOT_FOUND, f"no object {ref!r} in the bucket") from exc
        except TimeoutError as exc:
            raise TransientError(f"reading object {ref!r} timed out") from exc
        return obj.data or b""

    async def _offload(self, result: Result) -> None:
        """Move inline images to the blob bucket when the result would be too large."""
        inline = sum(
            len(o.data) for o in result.outputs.values() if isinstance(o, ImageOutput) and o.data
        )
        if inline <= self._inline_limit or self._blobs is None:
            return
        for name, output in result.outputs.items():
            if isinstance(output, ImageOutput) and output.data is not None:
                ref = f"results/{result.job_id}/{name}"
                await self._blobs.put(ref, base64.b64decode(output.data))
                output.data, output.ref = None, ref

    async def publish(
        self, result: Result, reply_to: str | None, trace_headers: dict[str, str]
    ) -> None:
        """Store the result (awaiting the stream's ack), then send it to `reply_to`."""
        await self._offload(result)
        body = result.model_dump_json().encode()
        headers = {
            **trace_headers,
            Header.JOB_ID: result.job_id,
            Header.STATUS: result.status.value,
            Header.CONTENT_TYPE: "application/json",
        }
        if result.error is not None:
            headers[Header.ERROR_CODE] = result.error.code.value
        stored = {**headers, Header.MSG_ID: f"result-{result.job_id}"}
        # Store first: a client never sees a result that is not the final one.
        await self._js.publish(
            result_subject(result.job_id), body, headers=stored, timeout=STORE_TIMEOUT_S
        )
        if reply_to:
            await self._nc.publish(reply_to, body, headers=headers)

    async def resend(self, result: Result, reply_to: str | None) -> None:
        """Send an already stored result to `reply_to` again (a redelivered job)."""
        if reply_to:
            headers = {Header.JOB_ID: result.job_id, Header.STATUS: result.status.value}
            await self._nc.publish(reply_to, result.model_dump_json().encode(), headers=headers)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Keep a job that ran out of attempts, with its last error, on the dead stream."""
        headers = {
            Header.JOB_ID: letter.job_id,
            Header.LAST_ERROR: letter.last_error.message[:512],
            Header.ATTEMPTS: str(letter.attempts),
            Header.ORIGINAL_SUBJECT: letter.original_subject,
            Header.MSG_ID: f"dead-{letter.job_id}",
        }
        await self._js.publish(
            dead_subject(letter.function), letter.model_dump_json().encode(), headers=headers
        )
        log.warning(
            "dead-lettered after %d attempts: %s",
            letter.attempts,
            letter.last_error.message,
            extra={"job_id": letter.job_id},
        )
