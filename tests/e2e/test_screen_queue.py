"""Screening through the queue (`SURGE_SCREEN_VIA=queue`): the remove-bg worker holds no
screen model; real nsfw workers score each job first on their own queue.

The photos' real Open-NSFW scores (as small JPEGs): astronaut ~0.036, chelsea ~0.0001, so
`nsfw:nsfw>0.01` rejects the astronaut and passes the cat.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.screen import input_sha256, screen_job_id
from function.contract.wire import ImageOutput, JobStatus
from function.engine import screen_queue
from tests.conftest import WorkerFactory
from tests.helpers import small_jpeg

pytestmark = pytest.mark.timeout(120)

SCREEN = "nsfw:nsfw>0.01"


async def test_the_screen_function_scores_each_job_first_and_one_trace_spans_both(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    screen = await start_worker(function="nsfw")
    main = await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue")
    assert main.screening is None  # no screen model in this worker: the queue has it
    inbox = await client.inbox()
    astronaut, cat = small_jpeg(photos["astronaut"]), small_jpeg(photos["chelsea"])
    refused_id = await client.submit(astronaut, reply_to=inbox.subject)
    passed_id = await client.submit(cat, reply_to=inbox.subject)
    results = await inbox.wait([refused_id, passed_id], timeout=90)

    refused = results[refused_id]
    assert refused.status is JobStatus.ERROR and refused.error is not None
    assert refused.error.code is ErrorCode.CONTENT_REJECTED
    assert "nsfw=0.03" in refused.error.message and "nsfw>0.01" in refused.error.message
    passed = results[passed_id]
    assert passed.status is JobStatus.OK, passed.error
    assert isinstance(passed.outputs["mask"], ImageOutput)
    assert main.consumer is not None and sum(main.consumer.batch_sizes) == 1  # the cat only
    assert screen.consumer is not None and screen.consumer.completed == 2
    # each screen job's result is stored under its own id, in the job's trace
    for job_id, data, result in ((refused_id, astronaut, refused), (passed_id, cat, passed)):
        scored = await client.result(screen_job_id(job_id, input_sha256(data)))
        assert scored is not None and scored.function == "nsfw"
        assert scored.trace_id == result.trace_id


async def test_an_input_its_screen_cannot_read_is_answered_with_the_screens_error(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    await start_worker(function="nsfw")
    await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue")
    inbox = await client.inbox()
    truncated = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then nothing usable
    job_id = await client.submit(truncated, reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=60))[job_id]
    assert result.status is JobStatus.ERROR and result.error is not None
    assert result.error.code is ErrorCode.BAD_IMAGE
    assert "its nsfw screen failed" in result.error.message


async def test_a_job_whose_worker_stopped_mid_screen_is_not_screened_twice(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    first = await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue")
    inbox = await client.inbox()
    cat = small_jpeg(photos["chelsea"])
    job_id = await client.submit(cat, reply_to=inbox.subject)
    assert first.consumer is not None
    for _ in range(200):  # until it holds the job, waiting for its screen
        if first.consumer.in_flight:
            break
        await asyncio.sleep(0.05)
    assert first.consumer.in_flight == 1
    await first.stop(timeout=2)  # handed back: JetStream delivers it again
    screen = await start_worker(function="nsfw")
    second = await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue")
    result = (await inbox.wait([job_id], timeout=90))[job_id]
    assert result.status is JobStatus.OK, result.error
    assert screen.consumer is not None and screen.consumer.completed == 1  # one screen job
    assert second.consumer is not None and sum(second.consumer.batch_sizes) == 1


async def test_a_screen_that_never_answers_ends_in_a_dead_letter_not_a_lost_job(
    client: SurgeClient,
    start_worker: WorkerFactory,
    photos: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(screen_queue, "SCREEN_WAIT_S", 0.5)
    await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue", max_deliver=2)
    inbox = await client.inbox()  # no nsfw worker at all
    job_id = await client.submit(small_jpeg(photos["chelsea"]), reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=60))[job_id]
    assert result.status is JobStatus.ERROR and result.error is not None
    assert result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    assert "nsfw screen did not answer" in result.error.message


async def test_a_screen_result_stored_under_a_guessed_id_lets_nothing_through(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    screen = await start_worker(function="nsfw")
    await start_worker(function="remove-bg", screen=SCREEN, screen_via="queue")
    inbox = await client.inbox()
    astronaut, cat = small_jpeg(photos["astronaut"]), small_jpeg(photos["chelsea"])
    # the cat scored as if it were the astronaut's screen job (its id is no secret)
    guessed = screen_job_id("victim-1", input_sha256(astronaut))
    forged = await client.submit(cat, function="nsfw", job_id=guessed, reply_to=inbox.subject)
    assert (await inbox.wait([forged], timeout=60))[forged].status is JobStatus.OK
    job_id = await client.submit(astronaut, job_id="victim-1", reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=60))[job_id]
    assert result.error is not None and result.error.code is ErrorCode.CONTENT_REJECTED
    assert screen.consumer is not None and screen.consumer.completed == 2  # screened anew
