"""Pre-warm plans in NATS KV raise demand before a campaign, with no job queued."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from scaler._proto import externalscaler_pb2 as pb
from scaler.config import metric_name
from scaler.prewarm import PrewarmPlan, delete_plan, load_plans, store_plan
from tests.scaler.conftest import eventually, ref

pytestmark = pytest.mark.timeout(60)

KNOBS = {"coldStartSeconds": "20", "prewarmMarginSeconds": "5", "replicaThroughput": "2"}


async def metric(keda) -> float:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(**KNOBS), metricName=metric_name("tiny"))
    (value,) = (await keda.GetMetrics(request)).metricValues
    return value.metricValueFloat or float(value.metricValue)


async def test_prewarm_raises_demand_one_lead_time_before_the_window(keda, client) -> None:
    assert (await keda.IsActive(ref(**KNOBS))).result is False
    now = datetime.now(UTC)
    later = PrewarmPlan.new("tiny", start=now + timedelta(hours=1), duration_s=600, replicas=5)
    await store_plan(client.js, later)
    await asyncio.sleep(1.0)  # several plan refreshes: a campaign an hour away changes nothing
    assert (await keda.IsActive(ref(**KNOBS))).result is False
    assert await metric(keda) == 0.0

    # 15 s away, lead 20 + 5 s: warm up now; 6 jobs/s at 2 jobs/s per replica = 3 replicas
    soon = PrewarmPlan.new("tiny", start=now + timedelta(seconds=15), duration_s=60, rate=6)
    await store_plan(client.js, soon)
    assert await eventually(lambda: _metric_is(keda, 3.0), timeout=10)
    assert (await keda.IsActive(ref(**KNOBS))).result is True
    info = await client.js.consumer_info("SURGE_JOBS", "surge-tiny-normal")
    assert info.num_pending == 0  # no job at all: demand comes from the plan

    assert {p.id for p in await load_plans(client.js, "tiny")} == {later.id, soon.id}
    assert await delete_plan(client.js, "tiny", soon.id)
    assert not await delete_plan(client.js, "tiny", soon.id)
    await eventually(lambda: _inactive(keda), timeout=10)


async def _metric_is(keda, value: float) -> bool:
    return await metric(keda) == value


async def _inactive(keda) -> bool:
    return not (await keda.IsActive(ref(**KNOBS))).result


async def test_storing_a_plan_drops_ended_ones(client) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    ended = PrewarmPlan.new("tiny", start=past, duration_s=60, replicas=1)
    await store_plan(client.js, ended)
    fresh = PrewarmPlan.new("tiny", start=datetime.now(UTC), duration_s=60, replicas=1)
    await store_plan(client.js, fresh)
    assert [p.id for p in await load_plans(client.js, "tiny")] == [fresh.id]
    assert await load_plans(client.js, "nsfw") == []
