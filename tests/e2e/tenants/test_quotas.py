"""Each tenant on its own stream: quotas, fair share, no squatting, tenants come and go.

A real nats-server with a trusted worker user and two tenants, a real `tiny` worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import StorageType, StreamConfig

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.nats_auth import NatsAuth
from function.contract.parse import job_headers
from function.contract.quota import QuotaExceeded, TenantQuota
from function.contract.settings import (
    Header,
    Priority,
    WorkerSettings,
    job_subject,
    tenant_stream,
)
from function.contract.wire import JobStatus
from function.local.nats_server import EmbeddedNats
from function.transport.tenants import add_tenant, list_tenants, remove_tenant
from function.worker import Worker
from tests.e2e.tenants.stack import A, B, auth, tenant_worker
from tests.helpers import png_bytes, tiny_settings

pytestmark = pytest.mark.nats

QUOTAS = {A: TenantQuota(max_pending=3, max_payload=4096)}


@pytest.fixture
async def worker(server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Worker]:
    async with tenant_worker(server, model_dir, QUOTAS) as started:
        yield started


async def test_the_server_refuses_a_job_past_max_pending(
    tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """Jobs for a function no worker runs stay queued: the fourth is refused, B's are not."""
    for _ in range(3):
        await tenant_a.submit(png_bytes(), function="nsfw")
    with pytest.raises(QuotaExceeded) as refused:
        await tenant_a.submit(png_bytes(), function="nsfw")
    assert refused.value.quota == "max_pending" and refused.value.code is ErrorCode.QUOTA_EXCEEDED
    assert "quota_exceeded" in str(refused.value)
    for _ in range(4):
        await tenant_b.submit(png_bytes(), function="nsfw")


async def test_the_server_refuses_a_job_past_max_payload(tenant_a: SurgeClient) -> None:
    with pytest.raises(QuotaExceeded) as refused:
        await tenant_a.submit(os.urandom(8192), function="tiny", content_type="image/png")
    assert refused.value.quota == "max_payload"
    with pytest.raises(QuotaExceeded):  # the request/reply way says the same
        await tenant_a.call(os.urandom(8192), function="tiny", timeout=5)
    result = await tenant_a.call(png_bytes(), function="tiny", timeout=20)
    assert result.status is JobStatus.OK


async def test_jobs_past_max_rate_are_answered_quota_exceeded(
    admin: SurgeClient, worker: Worker, tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    await add_tenant(admin.js, A, TenantQuota(max_rate=2), worker.settings)
    assert worker.topology_watch is not None
    await worker.topology_watch.check()
    inbox_a, inbox_b = await tenant_a.inbox(), await tenant_b.inbox()
    a_ids = [await tenant_a.submit(png_bytes(), function="tiny", reply_to=inbox_a.subject)]
    a_ids += [
        await tenant_a.submit(png_bytes(), function="tiny", reply_to=inbox_a.subject)
        for _ in range(7)
    ]
    b_ids = [
        await tenant_b.submit(png_bytes(), function="tiny", reply_to=inbox_b.subject)
        for _ in range(8)
    ]
    got_a = await inbox_a.wait(a_ids, timeout=20)
    got_b = await inbox_b.wait(b_ids, timeout=20)
    ok = [r for r in got_a.values() if r.status is JobStatus.OK]
    over = [r for r in got_a.values() if r.status is JobStatus.ERROR]
    assert 2 <= len(ok) <= 4 and len(ok) + len(over) == 8  # 2 a second, 8 sent in < 2 s
    assert {r.error.code for r in over if r.error} == {ErrorCode.QUOTA_EXCEEDED}
    assert all("max_rate of 2 jobs/s" in (r.error.message if r.error else "") for r in over)
    assert all(r.status is JobStatus.OK for r in got_b.values())


async def test_one_tenants_backlog_does_not_hold_back_another(
    tenant_a: SurgeClient, tenant_b: SurgeClient, admin: SurgeClient, worker: Worker
) -> None:
    """A queues 1,500 jobs; B's job is answered while most of A's are still waiting."""
    await add_tenant(admin.js, A, TenantQuota(), worker.settings)
    image = png_bytes()
    acks = []
    for index in range(1500):
        headers = job_headers(f"spike-{index}", content_type="image/png", tenant=A)
        subject = job_subject(Priority.NORMAL, "tiny", A)
        acks.append(await tenant_a.js.publish_async(subject, image, headers=headers))
    await asyncio.gather(*acks)
    started = time.monotonic()
    result = await tenant_b.call(image, function="tiny", priority=Priority.NORMAL, timeout=30)
    waited = time.monotonic() - started
    left = (await admin.js.stream_info(tenant_stream(A))).state.messages
    assert result.status is JobStatus.OK and result.tenant == B
    assert left > 500, f"B waited {waited:.2f}s, behind A's backlog (only {left} left)"


async def test_a_tenant_cannot_squat_another_tenants_message_id(
    tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """A stores a job under B's de-duplication id: it lands on A's own stream, so B's job
    with that id is neither dropped as a duplicate nor answered with A's result."""
    squat = job_headers("order-7", content_type="image/png", tenant=A)
    squat[Header.MSG_ID] = f"{B}:order-7"
    ack = await tenant_a.js.publish(
        job_subject(Priority.NORMAL, "nsfw", A), png_bytes(), headers=squat
    )
    assert ack.stream == tenant_stream(A)
    inbox = await tenant_b.inbox()
    await tenant_b.submit(png_bytes(), function="tiny", job_id="order-7", reply_to=inbox.subject)
    result = (await inbox.wait(["order-7"], timeout=20))["order-7"]
    assert (result.status, result.tenant) == (JobStatus.OK, B)


async def test_workers_follow_tenants_added_and_removed(
    server: EmbeddedNats, admin: SurgeClient, worker: Worker
) -> None:
    """A tenant added while the worker runs is served within a few seconds; removing one
    leaves the worker ready."""
    assert sorted(await list_tenants(admin.js)) == [A, B]
    assert await remove_tenant(admin.js, B) == 0
    await add_tenant(admin.js, "tenant-c", TenantQuota(), worker.settings)
    assert worker.topology_watch is not None
    await asyncio.sleep(worker.topology_watch.interval_s + 1)
    assert worker.consumer is not None and worker.consumer.tenants == [A, "tenant-c"]
    assert worker.ready and worker.trouble() is None
    async with await SurgeClient.connect(server.url, auth("surge"), tenant="tenant-c") as c:
        result = await c.call(png_bytes(), function="tiny", timeout=20)
    assert (result.status, result.tenant) == (JobStatus.OK, "tenant-c")


async def test_a_tenants_job_for_an_unserved_function_is_answered(
    server: EmbeddedNats, model_dir: Path
) -> None:
    """The orphan sweeper covers tenants' streams: unknown_function, not silence."""
    async with tenant_worker(server, model_dir, orphan_grace_s=0.2):
        await asyncio.sleep(1.2)  # the streams are no longer young (5 graces of 0.2 s)
        async with await SurgeClient.connect(server.url, auth(A), tenant=A) as tenant_a:
            inbox = await tenant_a.inbox()
            job_id = await tenant_a.submit(png_bytes(), function="ghost", reply_to=inbox.subject)
            result = (await inbox.wait([job_id], timeout=15))[job_id]
    assert result.error is not None and result.error.code is ErrorCode.UNKNOWN_FUNCTION
    assert result.tenant == A


async def test_tenants_are_found_past_the_first_page_of_streams(
    nats_server: EmbeddedNats,
) -> None:
    """The server lists 256 streams a page: a tenant added after 300 others is found."""
    async with await SurgeClient.connect(nats_server.url) as admin:
        for index in range(300):
            config = StreamConfig(name=f"OTHER_{index}", subjects=[f"other.{index}"])
            config.storage = StorageType.MEMORY
            await admin.js.add_stream(config=config)
        await add_tenant(admin.js, "late", TenantQuota(max_pending=5), WorkerSettings())
        assert await list_tenants(admin.js) == {"late": TenantQuota(max_pending=5)}


async def test_a_worker_that_may_not_list_streams_still_serves_open_jobs(
    tmp_path: Path, model_dir: Path
) -> None:
    """Tenants are an addition: a worker user without STREAM.LIST starts and answers."""
    config = (
        'authorization { users = [ { user: "w", password: "w-pw", '
        'permissions: { publish: { deny: ["$JS.API.STREAM.LIST"] } } } ] }\n'
    )
    auth = NatsAuth(user="w", password="w-pw")
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        worker = Worker(tiny_settings(server.url, model_dir), auth=auth)
        await asyncio.wait_for(worker.start(), 30)
        try:
            async with await SurgeClient.connect(server.url, auth) as client:
                result = await client.call(png_bytes(), function="tiny", timeout=20)
            assert result.status is JobStatus.OK and worker.ready
        finally:
            await worker.stop(timeout=10)
