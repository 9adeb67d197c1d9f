"""The load generator's backlog probe counts the open jobs stream and every tenant's; its
heartbeat tracker counts the function's workers and names the other functions'."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from function.client import SurgeClient
from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.quota import TenantQuota
from function.contract.settings import (
    Priority,
    WorkerSettings,
    consumer_name,
    heartbeat_subject,
    tenant_stream,
)
from function.transport.tenants import add_tenant, ensure_tenant_consumers, remove_tenant
from loadgen.run.monitor import BacklogProbe, HeartbeatTracker
from tests.helpers import png_bytes

pytestmark = [pytest.mark.nats, pytest.mark.timeout(30)]


async def test_backlog_sums_the_open_stream_and_tenants_streams(client: SurgeClient) -> None:
    probe = BacklogProbe(client.js, "tiny")
    settings = WorkerSettings(function="tiny")
    await add_tenant(client.js, "acme", TenantQuota(), settings)
    await add_tenant(client.js, "gone", TenantQuota(), settings)
    assert await probe.backlog() == 0

    await client.submit(png_bytes(), function="tiny")
    for tenant, count in (("acme", 2), ("gone", 3)):
        tenant_client = SurgeClient(client.nc, tenant=tenant)
        for _ in range(count):
            await tenant_client.submit(png_bytes(), function="tiny", priority=Priority.HIGH)
    await client.submit(png_bytes(), function="other")
    assert await probe.backlog() == 6  # no consumers yet: the streams' message counts

    # With consumers: pending plus ack pending (a job held by a worker still counts).
    await ensure_tenant_consumers(client.js, settings, "acme")
    sub = await client.js.pull_subscribe_bind(
        consumer_name("tiny", Priority.HIGH), stream=tenant_stream("acme")
    )
    (held,) = await sub.fetch(1, timeout=5)
    assert await probe.backlog() == 6
    await held.ack()
    assert await probe.backlog() == 5

    await remove_tenant(client.js, "gone", force=True)
    assert await probe.backlog() == 2
    await sub.unsubscribe()


async def test_heartbeats_count_this_function_and_name_the_others(client: SurgeClient) -> None:
    tracker = HeartbeatTracker(client.nc, "remove-bg")
    await tracker.start()
    now = datetime.now(UTC)
    beats = [
        Heartbeat(worker_id="w1", function="remove-bg", state=WorkerState.WARMING, started_at=now),
        Heartbeat(worker_id="w2", function="remove-bg", state=WorkerState.READY, started_at=now),
        Heartbeat(worker_id="t1", function="tiny", state=WorkerState.READY, started_at=now),
        Heartbeat(worker_id="t2", function="tiny", state=WorkerState.WARMING, started_at=now),
        Heartbeat(worker_id="t1", function="tiny", state=WorkerState.READY, started_at=now),
    ]
    for beat in beats:
        await client.nc.publish(heartbeat_subject(beat.function), beat.model_dump_json().encode())
    await client.nc.publish(heartbeat_subject("tiny"), b"not a heartbeat")
    await client.nc.flush()
    for _ in range(100):  # callbacks run after the round trip: wait for the last ones
        if tracker.seen == 2 and tracker.others().get("tiny") == 2:
            break
        await asyncio.sleep(0.05)
    assert tracker.seen == 2 and tracker.ever_ready == 1 and tracker.ready() == 1
    assert tracker.others() == {"tiny": 2}
    await tracker.stop()
