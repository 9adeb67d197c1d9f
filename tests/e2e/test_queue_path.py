"""The job path through a real nats-server and real models, end to end."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from function.client import SurgeClient
from function.contract.settings import Header, Priority, job_subject
from function.contract.wire import ImageOutput, JobStatus, ScoresOutput
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes


def _mask(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32) / 255.0


async def test_astronaut_mask_separates_person_from_background(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    await start_worker(function="remove-bg")
    inbox = await client.inbox()
    astronaut = photos["astronaut"].read_bytes()
    job_id = await client.submit(astronaut, outputs=("mask", "cutout"), reply_to=inbox.subject)
    results = await inbox.wait([job_id], timeout=60)
    result = results[job_id]
    assert result.status is JobStatus.OK, result.error
    mask_out = result.outputs["mask"]
    assert isinstance(mask_out, ImageOutput)
    mask = _mask(await client.output_bytes(mask_out))
    height, width = mask.shape
    with Image.open(photos["astronaut"]) as original:
        assert (width, height) == original.size
    assert mask[height // 2, width // 2] > 0.5
    assert mask[: height // 10, : width // 10].mean() < 0.1
    cutout = result.outputs["cutout"]
    assert isinstance(cutout, ImageOutput)
    assert Image.open(io.BytesIO(await client.output_bytes(cutout))).mode == "RGBA"
    assert result.model is not None and result.model.name == "u2netp"
    assert len(result.model.version) == 16
    assert result.timings.batch_size >= 1 and result.timings.inference_ms > 0
    assert result.timings.total_ms >= result.timings.inference_ms
    assert await client.result(job_id) == result


async def test_64_jobs_all_answered_with_real_batches(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    images = [p.read_bytes() for p in photos.values()]
    inbox = await client.inbox()
    ids = [
        await client.submit(images[i % len(images)], reply_to=inbox.subject, function="remove-bg")
        for i in range(64)
    ]
    worker = await start_worker(function="remove-bg", max_batch=8, max_batch_wait_ms=20)
    results = await inbox.wait(ids, timeout=150)
    assert set(results) == set(ids)
    assert all(r.status is JobStatus.OK for r in results.values())
    assert max(r.timings.batch_size for r in results.values()) > 1
    assert worker.consumer is not None and sum(worker.consumer.batch_sizes) == 64


async def test_a_worker_started_on_a_backlog_answers_its_first_job_alone(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    inbox = await client.inbox()
    ids = [
        await client.submit(png_bytes(), reply_to=inbox.subject, function="tiny") for _ in range(9)
    ]
    worker = await start_worker(function="tiny", max_batch=4, runners=1, max_batch_wait_ms=50)
    results = await inbox.wait(ids, timeout=30)
    assert set(results) == set(ids)
    assert worker.consumer is not None
    sizes = list(worker.consumer.batch_sizes)  # one runner: in the order taken
    assert sizes[0] == 1 and max(sizes) == 4 and sum(sizes) == 9
    assert sum(r.timings.batch_size == 1 for r in results.values()) == sizes.count(1)


async def test_a_cheap_model_started_on_a_backlog_learns_to_run_on_the_event_loop(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    """Jobs waiting at start: batch 1 alone is warmed, so whether the model is cheaper
    than a thread hop is learned from the full batches it serves (it was never, before)."""
    inbox = await client.inbox()
    ids = [
        await client.submit(png_bytes(), reply_to=inbox.subject, function="tiny")
        for _ in range(200)
    ]
    worker = await start_worker(function="tiny", max_batch=4, max_batch_wait_ms=50)
    assert sorted(worker.warmup_ms) == [1]  # so its start could not say
    results = await inbox.wait(ids, timeout=60)
    assert all(r.status is JobStatus.OK for r in results.values()) and len(results) == 200
    assert worker.consumer is not None and worker.consumer.batch_sizes.count(4) >= 2
    assert worker.consumer.models.fast


async def test_nsfw_scores(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    await start_worker(function="nsfw")
    inbox = await client.inbox()
    job_id = await client.submit(
        photos["astronaut"].read_bytes(), function="nsfw", reply_to=inbox.subject
    )
    result = (await inbox.wait([job_id], timeout=60))[job_id]
    assert result.status is JobStatus.OK
    scores = result.outputs["scores"]
    assert isinstance(scores, ScoresOutput)
    assert abs(scores.scores["nsfw"] + scores.scores["sfw"] - 1) < 1e-4
    assert scores.scores["nsfw"] < 0.5


async def test_same_job_published_twice_is_computed_once(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(function="tiny")
    inbox = await client.inbox()
    first = await client.js.publish(
        job_subject(Priority.NORMAL, "tiny"),
        png_bytes(),
        headers={Header.MSG_ID: "dup-1", Header.REPLY_TO: inbox.subject},
    )
    second = await client.js.publish(
        job_subject(Priority.NORMAL, "tiny"),
        png_bytes(),
        headers={Header.MSG_ID: "dup-1", Header.REPLY_TO: inbox.subject},
    )
    assert not first.duplicate and second.duplicate
    await inbox.wait(["dup-1"], timeout=20)
    await inbox.wait(["never"], timeout=1.0)
    assert worker.consumer is not None and worker.consumer.completed == 1


async def test_high_priority_served_before_normal_backlog(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    image = photos["astronaut"].read_bytes()
    inbox = await client.inbox()
    normal = [await client.submit(image, reply_to=inbox.subject) for _ in range(24)]
    high = [await client.submit(image, priority="high", reply_to=inbox.subject) for _ in range(4)]
    await start_worker(function="remove-bg", max_batch=4, max_batch_wait_ms=0)
    await inbox.wait(normal + high, timeout=120)
    order = sorted(inbox.received_at, key=inbox.received_at.__getitem__)
    last_high = max(order.index(j) for j in high)
    # At most one batch of normal jobs was already fetched when high arrived.
    assert last_high < 4 + 4 + 4, order.index
    assert sum(order.index(j) < last_high for j in normal) <= 8


async def test_envelope_cloudevents_and_object_store_inputs(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    await start_worker(function="tiny")
    inbox = await client.inbox()
    subject = job_subject(Priority.NORMAL, "tiny")
    image = png_bytes(32, 32)
    b64 = base64.b64encode(image).decode()
    envelope = {"job_id": "env-1", "image": b64, "reply_to": inbox.subject}
    await client.js.publish(
        subject, json.dumps(envelope).encode(), headers={Header.CONTENT_TYPE: "application/json"}
    )
    event = {
        "specversion": "1.0",
        "id": "ce-structured",
        "source": "test",
        "type": "dev.surge.job",
        "datacontenttype": "image/png",
        "data_base64": b64,
    }
    await client.js.publish(
        subject,
        json.dumps(event).encode(),
        headers={
            Header.CONTENT_TYPE: "application/cloudevents+json",
            Header.REPLY_TO: inbox.subject,
        },
    )
    binary = {
        "ce-specversion": "1.0",
        "ce-id": "ce-binary",
        "ce-source": "test",
        "ce-type": "dev.surge.job",
        Header.CONTENT_TYPE: "image/png",
        Header.REPLY_TO: inbox.subject,
    }
    await client.js.publish(subject, image, headers=binary)
    big = np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > client.nc.max_payload
    ref_id = await client.submit(buffer.getvalue(), function="tiny", reply_to=inbox.subject)
    ids = ["env-1", "ce-structured", "ce-binary", ref_id]
    results = await inbox.wait(ids, timeout=30)
    assert {j: r.status for j, r in results.items()} == dict.fromkeys(ids, JobStatus.OK)


async def test_call_returns_the_result_and_the_job_is_stored(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    result = await client.call(png_bytes(), function="tiny", timeout=20)
    assert result.status is JobStatus.OK
    assert await client.result(result.job_id) == result
    failed = await client.call(b"\x00not an image" * 4, function="tiny", timeout=20)
    assert failed.status is JobStatus.ERROR
    assert failed.error is not None and failed.error.code.value == "bad_image"


async def test_a_worker_sets_the_interpreters_switch_interval(
    start_worker: WorkerFactory,
) -> None:
    import sys

    before = sys.getswitchinterval()
    try:
        await start_worker(function="tiny", switch_interval_ms=2.0)
        assert sys.getswitchinterval() == 0.002  # its decode and encode threads wait less
    finally:
        sys.setswitchinterval(before)
