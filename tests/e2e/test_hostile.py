"""Issue 9: no message can wedge, bloat or fool a worker; each finding is a test here.

Real nats-server (1 MiB max_payload), real in-process workers, a plain NATS client.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from nats.errors import NoRespondersError
from nats.js.api import ConsumerConfig
from nats.js.errors import NoStreamResponseError, NotFoundError
from PIL import Image

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.parse import derive_job_id
from function.contract.settings import (
    ADVISORIES_STREAM,
    DEAD_STREAM,
    JOBS_STREAM,
    OBJECT_STORE_BUCKET,
    Header,
    Priority,
    WorkerSettings,
    consumer_name,
    dead_subject,
    job_subject,
    max_deliveries_subject,
    sweeper_name,
)
from function.contract.wire import DeadLetter, JobStatus, ModelInfo, Result
from function.local.nats_server import EmbeddedNats
from function.transport.orphans import OrphanSweeper
from function.transport.poison import PoisonSweeper
from function.transport.storage import ResultStore
from function.transport.topology import ensure_topology
from tests.conftest import WorkerFactory
from tests.helpers import failing_model, png_bytes, settled_consumer

SUBJECT = job_subject(Priority.NORMAL, "tiny")


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random pixels of about `target_bytes` (noise does not compress)."""
    side = int((target_bytes / 3) ** 0.5)
    pixels = np.random.default_rng(7).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


async def _publish(client: SurgeClient, payload: bytes, headers: dict[str, str]) -> str:
    """Publish a job as any NATS client would; return the id the worker will answer to."""
    ack = await client.js.publish(SUBJECT, payload, headers=headers)
    given = headers.get(Header.MSG_ID)
    return given if given and "." not in given else derive_job_id(JOBS_STREAM, ack.seq)


async def _stored(client: SurgeClient, job_id: str, timeout: float = 15.0) -> Result:
    deadline = asyncio.get_running_loop().time() + timeout
    while (result := await client.result(job_id)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no stored result for {job_id}"
        await asyncio.sleep(0.05)
    return result


async def _still_serving(client: SurgeClient) -> None:
    inbox = await client.inbox()
    good = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    assert (await inbox.wait([good], timeout=20))[good].status is JobStatus.OK
    info = await settled_consumer(client.js, "surge-tiny-normal")
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0


HOSTILE: list[tuple[str, dict[str, str], bytes]] = [
    ("long-reply-header", {Header.REPLY_TO: "r." + "x" * 5000}, png_bytes()),
    ("space-reply-header", {Header.REPLY_TO: "a b"}, png_bytes()),
    (
        "long-reply-envelope",
        {Header.CONTENT_TYPE: "application/json"},
        json.dumps({"image": "aGVsbG8=", "reply_to": "r." + "x" * 5000}).encode(),
    ),
    ("long-job-id-header", {Header.MSG_ID: "a." + "x" * 60_000}, b"x"),
    (
        "result-sized-envelope-job-id",
        {Header.MSG_ID: "", Header.CONTENT_TYPE: "application/json"},
        json.dumps({"image": "aGVsbG8=", "job_id": "a." + "x" * 1_000_000}).encode(),
    ),
    ("overflow-deadline", {Header.DEADLINE: "99999999999999999999"}, png_bytes()),
    (
        "deep-json",
        {Header.CONTENT_TYPE: "application/json"},
        b"[" * 50_000 + b"]" * 50_000,
    ),
    (
        "huge-int",
        {Header.CONTENT_TYPE: "application/json"},
        b'{"image": "aGVsbG8=", "n": ' + b"9" * 5000 + b"}",
    ),
]


@pytest.mark.parametrize(("name", "headers", "payload"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_hostile_job_is_answered_once_and_the_worker_stays_connected(
    client: SurgeClient,
    start_worker: WorkerFactory,
    name: str,
    headers: dict[str, str],
    payload: bytes,
) -> None:
    """Findings 1, 2, 3, 5: each is a permanent bad_envelope, stored, never retried."""
    worker = await start_worker(function="tiny", ack_wait_s=3.0, warmup_batch_sizes=[])
    headers = {k: v for k, v in {Header.MSG_ID: f"hostile-{name}", **headers}.items() if v}
    job_id = await _publish(client, payload, headers)
    result = await _stored(client, job_id)
    assert result.status is JobStatus.ERROR
    assert result.error is not None and result.error.code is ErrorCode.BAD_ENVELOPE
    assert result.attempts == 1
    assert len(result.model_dump_json()) < 4096
    assert worker.nc is not None and worker.nc.is_connected
    assert worker.trouble() is None
    await _still_serving(client)


async def test_near_max_payload_job_that_always_fails_is_dead_lettered_and_answered(
    client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """Finding 4 (worker path): a dead letter over max_payload drops its payload, not itself."""
    model = failing_model(tmp_path / "fails.onnx")
    await start_worker(
        function="tiny",
        model_path=model,
        max_deliver=2,
        nak_delay_s=0.05,
        warmup_batch_sizes=[],
        max_pixels=10_000_000,
    )
    payload = noise_png(900_000)
    assert len(payload) < 1024 * 1024 < len(payload) * 4 // 3
    inbox = await client.inbox()
    job_id = await client.submit(payload, function="tiny", reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=30))[job_id]
    assert result.error is not None and result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    raw = await client.js.get_last_msg(DEAD_STREAM, dead_subject("tiny"))
    assert raw.data is not None
    letter = DeadLetter.model_validate_json(raw.data)
    assert letter.job_id == job_id and letter.payload_dropped
    assert letter.payload_bytes == len(payload) and not letter.payload_b64


async def test_sweeper_answers_a_poison_job_whose_letter_would_not_fit(
    client: SurgeClient, nats_server: EmbeddedNats
) -> None:
    """Finding 4 (advisory path): before, the sweeper naked the advisory forever."""
    settings = WorkerSettings(nats_url=nats_server.url, function="tiny")
    topology = await ensure_topology(client.js, settings)
    results = ResultStore(client.nc, client.js, topology.blobs, inline_limit=1, function="tiny")
    inbox = await client.inbox()
    headers = {
        Header.MSG_ID: "poison-big",
        Header.REPLY_TO: inbox.subject,
        "X-Padding": "p" * 50_000,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    ack = await client.js.publish(SUBJECT, noise_png(900_000), headers=headers)
    model = ModelInfo(name="u2netp", version="309c8469258dda74")
    sweeper = PoisonSweeper(client.nc, client.js, results, "tiny", max_deliver=5, model=model)
    await sweeper.sweep(ack.seq, 5)
    result = (await inbox.wait(["poison-big"], timeout=10))["poison-big"]
    assert result.error is not None and result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    assert result.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert result.model is not None and result.model.name == "u2netp"
    raw = await client.js.get_last_msg(DEAD_STREAM, dead_subject("tiny"))
    assert raw.data is not None and DeadLetter.model_validate_json(raw.data).payload_dropped
    with pytest.raises(NotFoundError):
        await client.js.get_msg(JOBS_STREAM, seq=ack.seq)


async def test_jobs_for_unserved_functions_are_answered_and_removed(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    """Finding 8: before, they were accepted and kept forever."""
    await start_worker(function="tiny", orphan_grace_s=0.5, warmup_batch_sizes=[])
    inbox = await client.inbox()
    for subject in ("surge.jobs.urgent.tiny", "surge.jobs.normal.tiny.a.b", "surge.jobs.x"):
        with pytest.raises((NoRespondersError, NoStreamResponseError)):
            await client.js.publish(subject, png_bytes(), timeout=1)
    await client.js.publish(
        job_subject(Priority.NORMAL, "nope"),
        png_bytes(),
        headers={Header.MSG_ID: "for-nobody", Header.REPLY_TO: inbox.subject},
    )
    envelope = {"image": "aGVsbG8=", "job_id": "enveloped", "reply_to": inbox.subject}
    await client.js.publish(
        job_subject(Priority.HIGH, "nope"),
        json.dumps(envelope).encode(),
        headers={Header.CONTENT_TYPE: "application/json"},
    )
    answers = await inbox.wait(["for-nobody", "enveloped"], timeout=15)
    for result in answers.values():
        assert result.error is not None and result.error.code is ErrorCode.UNKNOWN_FUNCTION
        assert "nope" in result.error.message
    deadline = time.monotonic() + 10  # each is deleted right after its answer is sent
    while (info := await client.js.stream_info(JOBS_STREAM)).state.messages:
        assert time.monotonic() < deadline, info.state
        await asyncio.sleep(0.05)
    assert info.config.max_age and info.config.max_age > 0


async def test_a_malformed_advisory_is_dropped_not_retried_forever(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    """Anyone who may publish on the advisory subject could otherwise loop the sweeper."""
    worker = await start_worker(function="tiny", warmup_batch_sizes=[])
    subject = max_deliveries_subject(consumer_name("tiny", Priority.NORMAL))
    await client.nc.publish(subject, b"not json")
    await client.nc.publish(subject, json.dumps({"stream_seq": "x"}).encode())
    await client.nc.flush()
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        info = await client.js.consumer_info(ADVISORIES_STREAM, sweeper_name("tiny"))
        if info.delivered.stream_seq >= 2 and info.num_ack_pending == 0:
            break
        assert asyncio.get_running_loop().time() < deadline, info
        await asyncio.sleep(0.05)
    assert info.num_redelivered == 0
    assert worker.trouble() is None
    await _still_serving(client)


async def test_a_blob_link_is_refused_not_followed(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    """nats-py follows links past the size check of the link itself (a link's size is 0)."""
    await start_worker(function="tiny", warmup_batch_sizes=[], max_payload_bytes=100_000)
    store = await client.js.object_store(OBJECT_STORE_BUCKET)
    await store.put("inputs/big", noise_png(300_000))
    # nats-py cannot create links; any client can, by writing the meta record.
    link = {
        "name": "inputs/link",
        "bucket": OBJECT_STORE_BUCKET,
        "nuid": "LINKNUID",
        "size": 0,
        "chunks": 0,
        "digest": "",
        "options": {"link": {"bucket": OBJECT_STORE_BUCKET, "name": "inputs/big"}},
    }
    meta = base64.urlsafe_b64encode(b"inputs/link").decode()
    await client.js.publish(f"$O.{OBJECT_STORE_BUCKET}.M.{meta}", json.dumps(link).encode())
    inbox = await client.inbox()
    for ref, code in (("inputs/big", ErrorCode.PAYLOAD_TOO_LARGE), ("inputs/link", None)):
        job_id = f"ref-{ref.split('/')[1]}"
        envelope = json.dumps({"image_ref": ref}).encode()
        await client.js.publish(
            SUBJECT,
            envelope,
            headers={
                Header.MSG_ID: job_id,
                Header.REPLY_TO: inbox.subject,
                Header.CONTENT_TYPE: "application/json",
            },
        )
        result = (await inbox.wait([job_id], timeout=15))[job_id]
        assert result.error is not None and result.attempts == 1
        assert result.error.code is (code or ErrorCode.BAD_ENVELOPE), result.error
    await _still_serving(client)


async def test_orphans_are_found_past_the_first_page_of_consumers(
    client: SurgeClient, nats_server: EmbeddedNats
) -> None:
    """The server lists 256 consumers a page: a served function on page two is no orphan."""
    settings = WorkerSettings(nats_url=nats_server.url, function="tiny")
    topology = await ensure_topology(client.js, settings)
    for index in range(130):
        for priority in Priority:
            name = f"f{index:03d}-{priority.value}"
            config = ConsumerConfig(
                durable_name=name, filter_subject=job_subject(priority, f"f{index:03d}")
            )
            await client.js.add_consumer(JOBS_STREAM, config=config)
    for function in ("f000", "f129", "nope"):
        await client.js.publish(job_subject(Priority.NORMAL, function), png_bytes())
    results = ResultStore(client.nc, client.js, topology.blobs, inline_limit=1, function="tiny")
    sweeper = OrphanSweeper(client.js, results, "tiny", grace_s=0.01)
    await asyncio.sleep(0.1)
    assert await sweeper.orphan_subjects() == [job_subject(Priority.NORMAL, "nope")]
