"""The load generator's backlog probe counts the open jobs stream and every tenant's."""

from __future__ import annotations

import pytest

from function.client import SurgeClient
from function.contract.quota import TenantQuota
from function.contract.settings import Priority, WorkerSettings, consumer_name, tenant_stream
from function.transport.tenants import add_tenant, ensure_tenant_consumers, remove_tenant
from loadgen.run.monitor import BacklogProbe
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
