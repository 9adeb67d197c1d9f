"""Fixtures of the tenant tests: a server with two tenant users, a worker, their clients.

A module overrides `worker` to give the tenants quotas; the clients follow it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from function.client import SurgeClient
from function.local.nats_server import EmbeddedNats
from function.worker import Worker
from tests.e2e.tenants.stack import A, B, auth, tenant_server, tenant_worker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with tenant_server(tmp_path / "nats") as started:
        yield started


@pytest.fixture
async def worker(server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Worker]:
    async with tenant_worker(server, model_dir, tenants=[A]) as started:
        yield started


@pytest.fixture
async def tenant_a(server: EmbeddedNats, worker: Worker) -> AsyncIterator[SurgeClient]:
    async with await SurgeClient.connect(server.url, auth(A), tenant=A) as client:
        yield client


@pytest.fixture
async def tenant_b(server: EmbeddedNats, worker: Worker) -> AsyncIterator[SurgeClient]:
    async with await SurgeClient.connect(server.url, auth(B), tenant=B) as client:
        yield client


@pytest.fixture
async def admin(server: EmbeddedNats, worker: Worker) -> AsyncIterator[SurgeClient]:
    async with await SurgeClient.connect(server.url, auth("surge")) as client:
        yield client
