"""The scaler counts tenants' jobs: each tenant's stream, added or removed at runtime."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.js.api import ConsumerConfig, ConsumerInfo, SequenceInfo

from function.client import SurgeClient
from function.contract.quota import TenantQuota
from function.contract.settings import Priority, WorkerSettings, consumer_name, tenant_stream
from function.transport.tenants import add_tenant, remove_tenant
from scaler._proto import externalscaler_pb2 as pb
from scaler.config import metric_name
from scaler.hub import ScalerHub
from scaler.watcher import FunctionWatcher
from tests.helpers import png_bytes
from tests.scaler.conftest import FAST, eventually, ref

pytestmark = pytest.mark.timeout(60)

KNOBS = {"replicaThroughput": "1", "targetDrainSeconds": "1"}


async def _tenant(client: SurgeClient, tenant: str) -> SurgeClient:
    await add_tenant(client.js, tenant, TenantQuota(), WorkerSettings())
    return SurgeClient(client.nc, tenant=tenant)


async def _submit(client: SurgeClient, count: int, priority: Priority = Priority.NORMAL) -> None:
    for _ in range(count):
        await client.submit(png_bytes(), function="tiny", priority=priority)


async def _pending(watcher: FunctionWatcher, want: int) -> bool:
    return watcher.observation().pending == want


async def test_a_tenants_jobs_scale_a_function_from_zero(keda, hub: ScalerHub, client) -> None:
    acme = await _tenant(client, "acme")
    await _submit(acme, 2)
    await _submit(acme, 1, Priority.HIGH)  # queued before anything made the consumers

    assert (await keda.IsActive(ref(**KNOBS))).result is True
    watcher = await hub.watcher("tiny")
    assert watcher.tenants == ("acme",)
    assert watcher.observation().pending == 3
    for priority in Priority:  # the scaler made the function's consumers on acme's stream
        info = await client.js.consumer_info(tenant_stream("acme"), consumer_name("tiny", priority))
        assert info.num_pending == (1 if priority is Priority.HIGH else 2)
    request = pb.GetMetricsRequest(scaledObjectRef=ref(**KNOBS), metricName=metric_name("tiny"))
    (value,) = (await keda.GetMetrics(request)).metricValues
    assert value.metricValueFloat >= 3.0  # 3 jobs at 1 job/s within 1 s

    await _submit(client, 2)  # the open stream's jobs count as well
    await eventually(lambda: _pending(watcher, 5), timeout=5)


async def test_a_tenant_added_while_watching_is_picked_up(hub: ScalerHub, client) -> None:
    watcher = await hub.watcher("tiny")
    assert watcher.tenants == ()
    assert watcher.observation().pending == 0

    late = await _tenant(client, "late")
    await _submit(late, 4)
    await eventually(lambda: _pending(watcher, 4), timeout=5)  # within plan_refresh_s
    assert watcher.tenants == ("late",)


async def test_a_removed_tenant_does_not_break_polling(nats_server, client) -> None:
    acme, gone = await _tenant(client, "acme"), await _tenant(client, "gone")
    await _submit(acme, 2)
    await _submit(gone, 3)
    watcher = FunctionWatcher(client.nc, "tiny", settings=FAST)
    await watcher.start()
    await watcher.stop()  # no background loop: the listing stays as it was at start
    assert watcher.tenants == ("acme", "gone")
    assert watcher.observation().pending == 5

    # Removed between the listing and a poll: that stream is dropped, the rest counted.
    assert await remove_tenant(client.js, "gone", force=True) == 3
    await watcher.poll()
    assert watcher.error is None
    assert watcher.observation().pending == 2
    assert watcher.tenants == ("acme",)
    await watcher.follow_tenants()
    assert watcher.tenants == ("acme",)


async def test_a_tenant_removed_while_watching(hub: ScalerHub, client) -> None:
    acme, gone = await _tenant(client, "acme"), await _tenant(client, "gone")
    await _submit(acme, 1)
    await _submit(gone, 2)
    watcher = await hub.watcher("tiny")
    assert watcher.observation().pending == 3

    await remove_tenant(client.js, "gone", force=True)
    await eventually(lambda: _pending(watcher, 1), timeout=5)
    assert watcher.tenants == ("acme",)
    await _submit(acme, 1)
    await eventually(lambda: _pending(watcher, 2), timeout=5)  # still polling
    assert watcher.error is None


async def test_a_tenants_consumer_deleted_is_recreated(hub: ScalerHub, client) -> None:
    acme = await _tenant(client, "acme")
    watcher = await hub.watcher("tiny")
    await client.js.delete_consumer(tenant_stream("acme"), consumer_name("tiny", Priority.NORMAL))
    await _submit(acme, 2)
    await eventually(lambda: _pending(watcher, 2), timeout=5)
    assert watcher.tenants == ("acme",)
    assert watcher.error is None


def _info(delivered: int, pending: int) -> ConsumerInfo:
    return ConsumerInfo(
        name="tiny-normal",
        stream_name="any",
        config=ConsumerConfig(),
        created=datetime(2026, 1, 1, tzinfo=UTC),
        delivered=SequenceInfo(consumer_seq=delivered, stream_seq=delivered),
        num_pending=pending,
    )


def test_tenants_coming_and_going_are_no_burst_and_no_reset_of_arrivals() -> None:
    class _Nats:
        def jetstream(self) -> object:
            return object()

    watcher = FunctionWatcher(_Nats(), "tiny")  # type: ignore[arg-type]
    open_, acme, late = (
        ("SURGE_JOBS", "c"),
        (tenant_stream("acme"), "c"),
        (tenant_stream("late"), "c"),
    )
    # First look: the counters are the baseline (1000 jobs of history, not arrivals).
    watcher._update({open_: _info(900, 0), acme: _info(100, 0)}, 0.0)
    first = watcher._arrived_total
    watcher._update({open_: _info(910, 0), acme: _info(105, 0)}, 1.0)
    assert watcher._arrived_total == first + 15
    # A new tenant's fresh consumers: its queued jobs arrived; acme gone: no reset.
    watcher._update({open_: _info(920, 0), late: _info(0, 4)}, 2.0)
    assert watcher._arrived_total == first + 29
