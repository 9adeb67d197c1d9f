"""The async face on a real nats-server with real workers: a job followed from queued
to done, typed remove-bg results, batches with progress, cancel, failures, timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from function.contract.wire import ImageOutput
from function.local.nats_server import EmbeddedNats
from surge import (
    AsyncSurge,
    ErrorCode,
    JobCancelled,
    JobFailed,
    JobState,
    JobTimeout,
    MissingOutput,
    NatsUnreachable,
    NotConnected,
)
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes

pytestmark = pytest.mark.timeout(120)


async def test_a_job_goes_from_queued_to_done(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(png_bytes(color=(255, 255, 255)), function="tiny")
        queued = await job.status()
        assert queued.state is JobState.QUEUED and queued.function == "tiny"
        await start_worker(function="tiny")
        result = await job.wait(timeout=30)
        assert result.ok and result.state is JobState.DONE and result.job_id == job.id
        assert result.scores()["mean"] == pytest.approx(1.0)
        assert (await job.status()).state is JobState.DONE
        with pytest.raises(MissingOutput, match=r"no image output 'mask'.*scores"):
            result.image("mask")


async def test_remove_bg_gives_the_mask_and_cutout_as_pil_images(
    nats_server: EmbeddedNats, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    photo = photos["astronaut"]
    with Image.open(photo) as opened:
        picture = opened.copy()
    size = picture.size
    await start_worker(function="remove-bg", max_batch=1, inline_output_limit=1024)  # by ref
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(photo, outputs=("mask", "cutout"))
        result = await job.wait(timeout=60)
        stored = result.raw.outputs["cutout"]
        assert isinstance(stored, ImageOutput) and stored.ref and stored.data is None
        mask = result.mask
        assert isinstance(mask, Image.Image) and mask.mode == "L" and mask.size == size
        centre = mask.getpixel((size[0] // 2, size[1] // 2))
        assert isinstance(centre, int) and centre > 128  # the astronaut
        assert result.cutout.mode == "RGBA" and result.cutout.size == size
        assert result.image_bytes("mask").startswith(b"\x89PNG")
        called = await surge.call(picture)  # a PIL image, request/response
        assert called.ok and called.mask.size == size


async def test_a_batch_of_20_reports_progress_and_gathers_every_result(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    submitted: list[tuple[int, int]] = []
    gathered: list[tuple[int, int]] = []
    images = [png_bytes(color=(i * 10, 0, 0)) for i in range(20)]
    async with AsyncSurge(nats_server.url) as surge:
        jobs = await surge.submit_many(
            images,
            function="tiny",
            concurrency=4,
            on_progress=lambda done, total: submitted.append((done, total)),
        )
        assert submitted == [(n, 20) for n in range(1, 21)]
        await start_worker(function="tiny")
        results = await surge.results(
            jobs, timeout=60, on_progress=lambda done, total: gathered.append((done, total))
        )
    assert gathered == [(n, 20) for n in range(1, 21)]
    assert [r.job_id for r in results] == [j.id for j in jobs]  # in the jobs' order
    assert all(r.ok for r in results)
    means = [r.scores()["mean"] for r in results]
    assert means == sorted(means) and means[0] < means[-1]  # each its own image


async def test_a_cancelled_queued_job_raises_job_cancelled(nats_server: EmbeddedNats) -> None:
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(png_bytes(), function="tiny")
        view = await job.cancel()
        assert view.state is JobState.CANCELLED
        with pytest.raises(JobCancelled) as raised:
            await job.wait(timeout=10)
        assert raised.value.code is ErrorCode.CANCELLED and raised.value.job_id == job.id
        assert isinstance(raised.value, JobFailed)
        assert (await job.status()).state is JobState.CANCELLED


async def test_a_bad_image_raises_job_failed_with_its_code(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(b"\x00\x01not an image at all" * 10, function="tiny")
        with pytest.raises(JobFailed, match="bad_image") as raised:
            await job.wait(timeout=30)
        assert raised.value.code is ErrorCode.BAD_IMAGE
        assert not isinstance(raised.value, JobCancelled)
        result = await job.result(timeout=5)  # result() returns it rather than raising
        assert not result.ok and result.state is JobState.FAILED


async def test_no_worker_means_a_timeout_naming_the_state(nats_server: EmbeddedNats) -> None:
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(png_bytes(), function="tiny")
        with pytest.raises(JobTimeout, match="last known state: queued") as raised:
            await job.result(timeout=0.5)
        assert raised.value.job_id == job.id and raised.value.state is JobState.QUEUED
        assert raised.value.waited_s == 0.5 and isinstance(raised.value, TimeoutError)
        with pytest.raises(JobTimeout) as batch:
            await surge.results([job], timeout=0.2)
        assert batch.value.missing == (job.id,) and batch.value.completed == []


async def test_a_result_is_found_after_the_fact_and_by_another_client(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    async with AsyncSurge(nats_server.url) as surge:
        job = await surge.submit(png_bytes(), function="tiny")
        first = await job.wait(timeout=30)
        again = await job.wait(timeout=5)  # the push was used up: from the store
        assert again.raw == first.raw
    async with AsyncSurge(nats_server.url) as other:
        followed = await other.job(job.id).wait(timeout=5)
        assert followed.raw == first.raw


async def test_clear_errors_for_closed_clients_bad_arguments_and_no_server(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    surge = await AsyncSurge.connect(nats_server.url)
    with pytest.raises(FileNotFoundError, match="no image file"):
        await surge.submit(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="not int"):
        await surge.submit(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'high' or 'normal'"):
        await surge.submit(png_bytes(), priority="urgent")
    with pytest.raises(ValueError, match="function"):
        await surge.submit(png_bytes(), function="a.b")
    with pytest.raises(ValueError, match="job id"):
        surge.job("a.*")
    await surge.close()
    with pytest.raises(NotConnected, match="closed"):
        await surge.submit(png_bytes())
    with pytest.raises(NotConnected, match="not connected"):
        await AsyncSurge(nats_server.url).submit(png_bytes())
    with pytest.raises(NatsUnreachable, match="no NATS server answered"):
        await AsyncSurge.connect("nats://127.0.0.1:1", wait_s=0.2)
