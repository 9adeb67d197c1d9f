"""Every kind of bad input gets its error code, is never retried, and the worker keeps serving."""

from __future__ import annotations

import json

import pytest

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.settings import Header, Priority, job_subject
from function.contract.wire import JobStatus
from tests.conftest import WorkerFactory
from tests.helpers import bomb_png, bomb_webp, gif_bytes, png_bytes, settled_consumer

SUBJECT = job_subject(Priority.NORMAL, "tiny")

CASES: list[tuple[str, bytes, dict[str, str], ErrorCode]] = [
    ("garbage", b"\x00\x01not an image at all" * 10, {}, ErrorCode.BAD_IMAGE),
    ("truncated", png_bytes(64, 64)[:60], {Header.CONTENT_TYPE: "image/png"}, ErrorCode.BAD_IMAGE),
    ("gif", gif_bytes(), {}, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    ("text", b"hello", {Header.CONTENT_TYPE: "text/plain"}, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    ("bomb", bomb_png(), {}, ErrorCode.TOO_MANY_PIXELS),
    ("webp-bomb", bomb_webp(), {}, ErrorCode.TOO_MANY_PIXELS),
    ("too-big", b"\x89PNG\r\n\x1a\n" + b"\x00" * 300_000, {}, ErrorCode.PAYLOAD_TOO_LARGE),
    ("bad-json", b'{"image": ', {Header.CONTENT_TYPE: "application/json"}, ErrorCode.BAD_ENVELOPE),
    (
        "bad-schema",
        json.dumps({"image": 42}).encode(),
        {Header.CONTENT_TYPE: "application/json"},
        ErrorCode.BAD_ENVELOPE,
    ),
    (
        "bad-cloudevent",
        json.dumps({"specversion": "1.0", "id": "x"}).encode(),
        {Header.CONTENT_TYPE: "application/cloudevents+json"},
        ErrorCode.BAD_ENVELOPE,
    ),
    (
        "wrong-function",
        json.dumps({"function": "nsfw", "image": "aGVsbG8="}).encode(),
        {Header.CONTENT_TYPE: "application/json"},
        ErrorCode.UNKNOWN_FUNCTION,
    ),
    (
        "missing-ref",
        json.dumps({"image_ref": "inputs/nope"}).encode(),
        {Header.CONTENT_TYPE: "application/json"},
        ErrorCode.INPUT_NOT_FOUND,
    ),
    ("bad-output", png_bytes(), {Header.OUTPUTS: "hologram"}, ErrorCode.BAD_ENVELOPE),
    (
        "past-deadline",
        png_bytes(),
        {Header.DEADLINE: "2001-01-01T00:00:00Z"},
        ErrorCode.DEADLINE_EXCEEDED,
    ),
]


@pytest.mark.parametrize(("name", "payload", "headers", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_error_result_and_is_not_retried(
    client: SurgeClient,
    start_worker: WorkerFactory,
    name: str,
    payload: bytes,
    headers: dict[str, str],
    code: ErrorCode,
) -> None:
    worker = await start_worker(function="tiny", max_payload_bytes=200_000, max_pixels=10_000_000)
    inbox = await client.inbox()
    job_id = f"bad-{name}"
    await client.js.publish(
        SUBJECT, payload, headers={Header.MSG_ID: job_id, Header.REPLY_TO: inbox.subject, **headers}
    )
    result = (await inbox.wait([job_id], timeout=20))[job_id]
    assert result.status is JobStatus.ERROR
    assert result.error is not None and result.error.code is code, result.error
    assert result.error.message
    assert result.attempts == 1
    # Terminated, not retried: the work queue is empty and nothing is pending.
    good = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    assert (await inbox.wait([good], timeout=20))[good].status is JobStatus.OK
    info = await settled_consumer(client.js, "surge-tiny-normal")
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0
    assert worker.ready
    assert await client.result(job_id) == result
