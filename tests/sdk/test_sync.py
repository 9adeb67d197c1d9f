"""The sync face from plain test functions (no running loop), against a real nats-server
and real workers on a loop of their own: the same story as the async face."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from function.local.nats_server import EmbeddedNats
from surge import (
    ErrorCode,
    Job,
    JobCancelled,
    JobFailed,
    JobState,
    JobTimeout,
    NotConnected,
    Surge,
)
from tests.helpers import png_bytes
from tests.sdk.conftest import ThreadedWorkers

pytestmark = pytest.mark.timeout(120)


def test_a_job_goes_from_queued_to_done(
    nats_server: EmbeddedNats, threaded_worker: ThreadedWorkers
) -> None:
    with Surge(nats_server.url) as surge:
        job = surge.submit(png_bytes(color=(255, 255, 255)), function="tiny")
        assert isinstance(job, Job)
        assert job.status().state is JobState.QUEUED
        threaded_worker(function="tiny")
        result = job.wait(timeout=30)
        assert result.ok and result.scores()["mean"] == pytest.approx(1.0)
        assert job.status().state is JobState.DONE
        called = surge.call(png_bytes(), function="tiny")  # request/response
        assert called.ok and called.scores()["mean"] < 1.0


def test_the_mask_of_a_remove_bg_photo_is_a_pil_image_of_its_size(
    nats_server: EmbeddedNats, threaded_worker: ThreadedWorkers, photos: dict[str, Path]
) -> None:
    threaded_worker(function="remove-bg")
    with Image.open(photos["astronaut"]) as opened:
        size = opened.size
    with Surge(nats_server.url) as surge:
        mask = surge.submit(str(photos["astronaut"])).wait(timeout=60).mask
        assert isinstance(mask, Image.Image) and mask.size == size and mask.mode == "L"


def test_a_batch_of_20_counts_progress_1_to_20(
    nats_server: EmbeddedNats, threaded_worker: ThreadedWorkers
) -> None:
    submitted: list[tuple[int, int]] = []
    gathered: list[tuple[int, int]] = []
    with Surge(nats_server.url) as surge:
        jobs = surge.submit_many(
            [png_bytes()] * 20,
            function="tiny",
            on_progress=lambda done, total: submitted.append((done, total)),
        )
        threaded_worker(function="tiny")
        results = surge.results(
            jobs, timeout=60, on_progress=lambda done, total: gathered.append((done, total))
        )
    assert submitted == gathered == [(n, 20) for n in range(1, 21)]
    assert [r.job_id for r in results] == [j.id for j in jobs] and all(r.ok for r in results)


def test_cancel_bad_input_and_timeout_raise_their_exceptions(
    nats_server: EmbeddedNats, threaded_worker: ThreadedWorkers
) -> None:
    with Surge(nats_server.url) as surge:
        queued = surge.submit(png_bytes(), function="tiny")
        with pytest.raises(JobTimeout, match="last known state: queued") as timed_out:
            queued.result(timeout=0.5)
        assert timed_out.value.job_id == queued.id
        assert queued.cancel().state is JobState.CANCELLED
        with pytest.raises(JobCancelled) as cancelled:
            queued.wait(timeout=10)
        assert cancelled.value.code is ErrorCode.CANCELLED
        threaded_worker(function="tiny")
        bad = surge.submit(b"\x00\x01not an image at all" * 10, function="tiny")
        with pytest.raises(JobFailed) as failed:
            bad.wait(timeout=30)
        assert failed.value.code is ErrorCode.BAD_IMAGE


def test_one_loop_thread_serves_every_call_and_closing_ends_it(
    nats_server: EmbeddedNats,
) -> None:
    def loop_threads() -> int:
        return sum(thread.name == "surge-sdk" for thread in threading.enumerate())

    surge = Surge(nats_server.url)
    jobs = [surge.submit(png_bytes(), function="tiny") for _ in range(5)]
    assert [job.status().state for job in jobs] == [JobState.QUEUED] * 5
    assert loop_threads() == 1  # one loop thread for every call, not one per call

    def reentrant(done: int, total: int) -> None:
        jobs[0].status()  # a sync call from the loop's own thread

    with pytest.raises(RuntimeError, match="use AsyncSurge there"):  # no deadlock
        surge.submit_many([png_bytes()], function="tiny", on_progress=reentrant)
    surge.close()
    surge.close()  # twice is fine
    assert loop_threads() == 0
    with pytest.raises(NotConnected, match="closed"):
        jobs[0].status()


async def test_the_sync_face_works_inside_a_running_event_loop(
    nats_server: EmbeddedNats,
) -> None:
    with Surge(nats_server.url) as surge:  # never asyncio.run(): that would refuse here
        job = surge.submit(png_bytes(), function="tiny")
        assert job.cancel().state is JobState.CANCELLED
