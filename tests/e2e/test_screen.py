"""Screening before work (`SURGE_SCREEN`): real workers, the real nsfw screen, real photos.

The photos' real Open-NSFW scores (as small JPEGs): astronaut ~0.036, chelsea ~0.0001, so
`nsfw:nsfw>0.01` rejects the astronaut and passes the cat.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.screen import Screen
from function.contract.settings import WorkerSettings
from function.contract.wire import ImageOutput, JobStatus
from function.engine.job import SMALL_INPUT_BYTES
from function.http.func import Function
from function.local.nats_server import EmbeddedNats
from function.worker import StartupError
from tests.conftest import WorkerFactory
from tests.helpers import asgi_client, small_jpeg, until_ready

SCREEN = "nsfw:nsfw>0.01"


def _small_jpeg(path: Path) -> bytes:
    """The photo as a JPEG small enough for the fast path (which a screen must not skip)."""
    data = small_jpeg(path)
    assert len(data) <= SMALL_INPUT_BYTES
    return data


def _screened(function: str, outcome: str) -> float:
    labels = {"function": function, "outcome": outcome}
    return REGISTRY.get_sample_value("surge_screened_total", labels) or 0.0


async def test_a_screened_out_job_never_reaches_the_main_model(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    rejected_before = _screened("remove-bg", "rejected")
    passed_before = _screened("remove-bg", "passed")
    worker = await start_worker(function="remove-bg", screen=SCREEN)
    assert worker.screening is not None and worker.screening.model.info.name == "open_nsfw"
    inbox = await client.inbox()
    astronaut = await client.submit(_small_jpeg(photos["astronaut"]), reply_to=inbox.subject)
    cat = await client.submit(_small_jpeg(photos["chelsea"]), reply_to=inbox.subject)
    results = await inbox.wait([astronaut, cat], timeout=60)

    refused = results[astronaut]
    assert refused.status is JobStatus.ERROR and refused.error is not None
    assert refused.error.code is ErrorCode.CONTENT_REJECTED
    assert "nsfw=0.03" in refused.error.message and "nsfw>0.01" in refused.error.message
    assert refused.outputs == {}
    assert await client.result(astronaut) == refused  # stored like any error result

    passed = results[cat]
    assert passed.status is JobStatus.OK, passed.error
    assert isinstance(passed.outputs["mask"], ImageOutput)
    assert worker.consumer is not None and sum(worker.consumer.batch_sizes) == 1  # the cat only
    assert _screened("remove-bg", "rejected") - rejected_before == 1
    assert _screened("remove-bg", "passed") - passed_before == 1


async def test_a_screen_without_its_score_is_a_startup_error(
    start_worker: WorkerFactory,
) -> None:
    with pytest.raises(StartupError, match=r"no score 'porn' \(its: nsfw, sfw\)"):
        await start_worker(function="tiny", warmup_batch_sizes=[], screen="nsfw:porn>0.5")
    with pytest.raises(StartupError, match="SURGE_SCREEN nope:x>1: "):
        await start_worker(function="tiny", warmup_batch_sizes=[], screen="nope:x>1")


async def test_without_a_screen_only_the_main_model_loads(start_worker: WorkerFactory) -> None:
    worker = await start_worker(function="tiny", warmup_batch_sizes=[])
    assert worker.screening is None and "screen" not in worker.phases


async def test_http_inference_is_screened_too(
    nats_server: EmbeddedNats, model_dir: Path, photos: dict[str, Path]
) -> None:
    settings = WorkerSettings(
        nats_url=nats_server.url,
        function="tiny",
        model_dir=model_dir,
        warmup_batch_sizes=[],
        screen=Screen.parse(SCREEN),
    )
    function = Function(settings)
    function.start()
    try:
        await until_ready(function)
        async with asgi_client(function) as http:
            headers = {"Content-Type": "image/jpeg"}
            refused = await http.post(
                "/v1/infer/tiny", content=_small_jpeg(photos["astronaut"]), headers=headers
            )
            passed = await http.post(
                "/v1/infer/tiny", content=_small_jpeg(photos["chelsea"]), headers=headers
            )
    finally:
        await function.drain()
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "content_rejected"
    assert "nsfw=0.03" in refused.json()["error"]["message"]
    assert passed.status_code == 200, passed.text
