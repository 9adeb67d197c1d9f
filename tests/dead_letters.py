"""Dead letters written the way a worker writes them (`ResultStore.dead_letter`)."""

from __future__ import annotations

import base64

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.parse import job_headers
from function.contract.settings import Priority, WorkerSettings, job_subject
from function.contract.wire import DeadLetter, ErrorInfo
from function.transport.storage import ResultStore
from function.transport.topology import ensure_streams
from tests.helpers import png_bytes


async def write_dead_letter(
    client: SurgeClient,
    job_id: str,
    *,
    function: str = "tiny",
    tenant: str | None = None,
    payload: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> DeadLetter:
    """A job that ran out of attempts, on `surge.dead.<function>` as the settler puts it
    (a payload over the server's max_payload is dropped from the letter, as there)."""
    await ensure_streams(client.js, WorkerSettings())
    payload = png_bytes() if payload is None else payload
    sent = job_headers(job_id, content_type="image/png", tenant=tenant)
    letter = DeadLetter(
        job_id=job_id,
        function=function,
        tenant=tenant,
        original_subject=job_subject(Priority.NORMAL, function, tenant),
        attempts=3,
        last_error=ErrorInfo(
            code=ErrorCode.INFERENCE_FAILED, message="RuntimeError: CUDA out of memory"
        ),
        stream_sequence=1,
        headers={**sent, **(headers or {})},
        payload_b64=base64.b64encode(payload).decode(),
        payload_bytes=len(payload),
    )
    store = ResultStore(client.nc, client.js, None, inline_limit=768 * 1024, function=function)
    await store.dead_letter(letter)
    return letter
