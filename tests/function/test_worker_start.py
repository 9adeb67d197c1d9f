"""Starting: a model that cannot load says so at once, even while NATS is unreachable;
jobs already waiting warm a session whose batch size was kept, instead of a warm run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from function.client import SurgeClient
from function.contract.settings import WorkerSettings
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes


async def test_a_model_that_cannot_load_fails_the_start_without_waiting_for_nats(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    settings = WorkerSettings(
        nats_url="nats://127.0.0.1:1",  # nothing listens; the worker would retry for ever
        function="tiny",
        model_dir=tmp_path,
        model_path=broken,
    )
    worker = Worker(settings)
    with pytest.raises(DecodeError, match="corrupt"):  # not a TimeoutError: no NATS wait
        await asyncio.wait_for(worker.start(), 30)
    assert worker.nc is None  # never connected


async def test_a_worker_started_on_waiting_jobs_lets_them_warm_its_session(
    start_worker: WorkerFactory,
    client: SurgeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = tmp_path / "models"
    first = await start_worker(function="tiny", model_dir=models)  # measures, keeps the choice
    await first.stop(timeout=10)
    inbox = await client.inbox()
    ids = [
        await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject) for _ in range(5)
    ]
    with caplog.at_level("INFO", logger="surge.warmup"):
        second = await start_worker(function="tiny", model_dir=models)
    assert "no synthetic warm run" in caplog.text
    results = await inbox.wait(ids, timeout=30)
    assert all(r.status == "ok" for r in results.values()) and len(results) == 5
    assert second.warmup_ms  # timings still known: from the kept choice
