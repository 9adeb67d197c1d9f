"""`nats req surge.call.<function>`: one request, and the job's result as the reply."""

from __future__ import annotations

import nats
from nats.js.api import StreamConfig

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.settings import JOBS_STREAM, call_subject
from function.contract.wire import JobStatus, Result
from function.local.nats_server import EmbeddedNats
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes


async def _call(
    url: str, subject: str, body: bytes, headers: dict[str, str] | None = None
) -> Result:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(subject, body, timeout=20, headers=headers)
    finally:
        await nc.close()
    return Result.model_validate_json(reply.data)


async def test_a_request_gets_the_jobs_result_not_a_puback(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    result = await _call(nats_server.url, call_subject("tiny"), png_bytes())
    assert result.status is JobStatus.OK and result.function == "tiny"
    assert "scores" in result.outputs
    async with await SurgeClient.connect(nats_server.url) as client:
        stored = await client.result(result.job_id)  # it went through the queue
    assert stored is not None and stored.status is JobStatus.OK


async def test_bad_input_in_a_request_is_an_error_reply(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    result = await _call(nats_server.url, call_subject("tiny"), b"\x89PNG\r\n\x1a\n not really")
    assert result.status is JobStatus.ERROR and result.error is not None
    assert result.error.code is ErrorCode.BAD_IMAGE
    asked = await _call(
        nats_server.url, call_subject("tiny"), png_bytes(), {"Surge-Outputs": "mask"}
    )
    assert asked.error is not None and asked.error.code is ErrorCode.BAD_ENVELOPE


async def test_a_request_the_queue_refuses_is_answered_at_once(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    config = (await js.stream_info(JOBS_STREAM)).config
    await js.update_stream(StreamConfig.from_response({**config.as_dict(), "max_msg_size": 64}))
    await nc.close()
    result = await _call(nats_server.url, call_subject("tiny"), png_bytes())
    assert result.error is not None and result.error.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "could not be queued" in result.error.message


async def test_a_request_too_large_to_requeue_is_refused_and_the_worker_stays_connected(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(function="tiny")
    assert worker.nc is not None
    body = png_bytes() + b"\0" * (worker.nc.max_payload - len(png_bytes()) - 16)
    result = await _call(nats_server.url, call_subject("tiny"), body)
    assert result.error is not None and result.error.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert worker.nc.is_connected  # its headers would have made the server close it
    assert (await _call(nats_server.url, call_subject("tiny"), png_bytes())).status is JobStatus.OK
