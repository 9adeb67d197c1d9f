"""SDK fixtures: workers for the sync tests, on a loop of their own in a thread (a sync
test has no running loop, and the SDK's sync face must not run inside one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats
from function.worker import Worker
from surge._loop import LoopThread

ThreadedWorkers = Callable[..., Worker]


@pytest.fixture
def threaded_worker(nats_server: EmbeddedNats, model_dir: Path) -> Iterator[ThreadedWorkers]:
    """Start real in-process workers on a background event loop; drained at teardown."""
    loop = LoopThread("test-workers")
    workers: list[Worker] = []

    def start(**overrides: Any) -> Worker:
        options = {"fetch_timeout_s": 0.5, "max_batch": 1, **overrides}  # no batch warmup
        settings = WorkerSettings(nats_url=nats_server.url, model_dir=model_dir, **options)
        worker = Worker(settings)
        workers.append(worker)
        loop.run(worker.start())
        return worker

    yield start
    try:
        for worker in workers:
            loop.run(worker.stop(timeout=10))
    finally:
        loop.close()
