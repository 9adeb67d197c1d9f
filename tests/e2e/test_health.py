"""Liveness tells the truth, and the worker recreates what a NATS server lost (issue 9)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from function.client import SurgeClient
from function.contract.settings import JOBS_STREAM, WorkerSettings
from function.contract.wire import JobStatus
from function.http.func import Function
from function.local.nats_server import EmbeddedNats
from function.transport.topology import ensure_topology, jobs_subjects
from tests.helpers import asgi_client, png_bytes


async def _until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def tiny(nats_server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Function]:
    settings = WorkerSettings(
        nats_url=nats_server.url,
        function="tiny",
        model_dir=model_dir,
        warmup_batch_sizes=[],
        liveness_grace_s=0.5,
        fetch_timeout_s=0.5,
        heartbeat_interval_s=0.2,
    )
    function = Function(settings)
    function.start()
    await _until(lambda: function.ready()[0], 60, "ready")
    yield function
    await function.drain()


async def test_closed_connection_fails_readiness_at_once_then_liveness(tiny: Function) -> None:
    """Finding 1: nats-py closes the connection for good on some server errors; before,
    the worker stayed live and ready with no connection."""
    fatal: list[str] = []
    tiny.on_fatal = fatal.append
    # a grace a loaded machine's close-then-probe takes well within (0.5 s flaked)
    tiny.settings = tiny.settings.model_copy(update={"liveness_grace_s": 2.0})
    worker = tiny.worker
    assert worker is not None and worker.nc is not None
    # The server answers a 5 KB subject with -ERR 'maximum control line exceeded'.
    await worker.nc.publish("r." + "x" * 5000, b"x")
    await _until(lambda: worker.nc is not None and worker.nc.is_closed, 10, "the close")
    async with asgi_client(tiny) as http:
        ready = await http.get("/health/readiness")
        assert ready.status_code == 503 and "closed" in ready.text
        assert fatal and "control line" in fatal[0]
        early = await http.get("/health/liveness")
        assert early.status_code == 200, early.text  # within the grace
        await asyncio.sleep(2.1)
        live = await http.get("/health/liveness")
        assert live.status_code == 500 and "closed" in live.text


async def test_worker_recreates_streams_after_the_server_lost_its_store(
    tiny: Function, nats_server: EmbeddedNats
) -> None:
    """Finding 7: before, workers never recreated the streams and stayed ready."""
    worker = tiny.worker
    assert worker is not None and worker.topology_watch is not None
    nats_server.stop()
    await _until(lambda: not tiny.ready()[0], 10, "readiness to fail")
    await asyncio.sleep(0.7)  # past the liveness grace: a reconnect in progress is no reason
    assert tiny.alive()[0], tiny.alive()  # to restart the pod
    shutil.rmtree(nats_server.store_dir / "js")
    nats_server.start()
    await _until(lambda: worker.topology_watch.recreated >= 1, 30, "the recreation")
    await _until(lambda: tiny.ready()[0], 30, "readiness")
    async with await SurgeClient.connect(nats_server.url) as client:
        inbox = await client.inbox()
        job = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
        assert (await inbox.wait([job], timeout=20))[job].status is JobStatus.OK
    assert tiny.alive()[0]


async def test_a_legacy_jobs_stream_is_narrowed_in_place_keeping_its_jobs(
    nats_server: EmbeddedNats,
) -> None:
    """Upgrading must not drop queued jobs (adding a max age would)."""
    async with await SurgeClient.connect(nats_server.url) as client:
        legacy = StreamConfig(
            name=JOBS_STREAM,
            subjects=["surge.jobs.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
        await client.js.add_stream(config=legacy)
        await client.js.publish("surge.jobs.normal.tiny", png_bytes())
        await ensure_topology(client.js, WorkerSettings(function="tiny", jobs_max_age_s=0.001))
        info = await client.js.stream_info(JOBS_STREAM)
        assert info.config.subjects == jobs_subjects()
        assert not info.config.max_age
        await asyncio.sleep(0.1)
        assert (await client.js.stream_info(JOBS_STREAM)).state.messages == 1
