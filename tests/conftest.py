"""Shared fixtures: a real nats-server per test, the real model cache, workers, clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from function.client import SurgeClient
from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats
from function.models import fetch_models, fetch_photos
from function.worker import Worker

REPO = Path(__file__).resolve().parents[1]

# A test that uses one of these fixtures (directly or through another fixture) gets the
# marker: `nats` starts a real nats-server, `models` needs the real ONNX models or photos.
# `make unit` runs `-m "not nats and not models"`. Modules that start servers or workers
# on their own set `pytestmark` as well.
NATS_FIXTURES = frozenset({"nats_server", "client", "start_worker", "hub", "keda", "cluster"})
MODEL_FIXTURES = frozenset(
    {
        "model_dir",
        "photos",
        "start_worker",
        "model_cache",
        "photo_files",
        "astronaut",
        "remove_bg",
        "nsfw",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & NATS_FIXTURES:
            item.add_marker(pytest.mark.nats)
        if used & MODEL_FIXTURES:
            item.add_marker(pytest.mark.models)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real model + photo cache (filled by `make models`; fetched here when missing)."""
    path = Path(os.environ.get("SURGE_MODEL_DIR", REPO / ".cache/surge/models"))
    fetch_models(path)
    return path


@pytest.fixture(scope="session")
def photos(model_dir: Path) -> dict[str, Path]:
    return fetch_photos(model_dir)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh nats-server with JetStream on a free loopback port."""
    with EmbeddedNats(store_dir=tmp_path / "nats", max_payload=1024 * 1024) as server:
        yield server


@pytest.fixture
async def client(nats_server: EmbeddedNats) -> AsyncIterator[SurgeClient]:
    async with await SurgeClient.connect(nats_server.url) as surge_client:
        yield surge_client


@pytest.fixture
def figures() -> Iterator[list[Any]]:
    """Matplotlib figures a test appends here are closed after it."""
    import matplotlib.pyplot as plt

    made: list[Any] = []
    yield made
    for fig in made:
        plt.close(fig)


WorkerFactory = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(nats_server: EmbeddedNats, model_dir: Path) -> AsyncIterator[WorkerFactory]:
    """Start in-process workers with settings overrides; all are drained at teardown."""
    workers: list[Worker] = []

    async def start(**overrides: Any) -> Worker:
        settings = WorkerSettings(
            nats_url=nats_server.url,
            model_dir=overrides.pop("model_dir", model_dir),
            ack_wait_s=overrides.pop("ack_wait_s", 10.0),
            nak_delay_s=overrides.pop("nak_delay_s", 0.1),
            fetch_timeout_s=overrides.pop("fetch_timeout_s", 0.5),
            heartbeat_interval_s=overrides.pop("heartbeat_interval_s", 0.2),
            **overrides,
        )
        worker = Worker(settings)
        workers.append(worker)
        await worker.start()
        return worker

    yield start
    for worker in workers:
        await worker.stop(timeout=10)
