"""The KEDA external-push contract against a real nats-server, called as KEDA calls it."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from function.client import SurgeClient
from function.contract.settings import JOBS_STREAM, Priority, consumer_name
from scaler._proto import externalscaler_pb2 as pb
from scaler.config import metric_name
from tests.helpers import png_bytes
from tests.scaler.conftest import eventually, ref

pytestmark = pytest.mark.timeout(60)


async def demand(keda, **metadata: str) -> float:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName=metric_name("tiny"))
    response = await keda.GetMetrics(request)
    (value,) = response.metricValues
    assert value.metricName == metric_name("tiny")
    return value.metricValueFloat or float(value.metricValue)


async def publish(client: SurgeClient, count: int, priority: Priority = Priority.NORMAL) -> None:
    for _ in range(count):
        await client.submit(png_bytes(), function="tiny", priority=priority)


async def test_metric_spec_asks_for_one_replica_per_unit(keda) -> None:
    response = await keda.GetMetricSpec(ref())
    (spec,) = response.metricSpecs
    assert spec.metricName == metric_name("tiny")
    assert spec.targetSizeFloat == 1.0
    assert spec.targetSize == 1


async def test_stream_pushes_true_when_a_job_lands_and_false_once_drained(
    keda, client, start_worker
) -> None:
    stream = keda.StreamIsActive(ref())
    first = await asyncio.wait_for(stream.read(), 10)
    assert first.result is False  # idle: the consumers exist (the scaler made them), nothing queued

    published = time.monotonic()
    await publish(client, 1)
    pushed = await asyncio.wait_for(stream.read(), 10)
    latency = time.monotonic() - published
    assert pushed.result is True
    # Pushed, not polled: well inside KEDA's own polling interval (speed: bench_activation).
    assert latency < 2.0, latency

    await start_worker(function="tiny")
    drained = await asyncio.wait_for(stream.read(), 30)
    assert drained.result is False
    stream.cancel()


async def test_demand_rises_with_backlog_and_falls_as_workers_ack(
    keda, client, start_worker
) -> None:
    knobs = {"replicaThroughput": "2", "targetDrainSeconds": "5", "coldStartSeconds": "1"}
    assert await demand(keda, **knobs) == 0.0
    await publish(client, 20)
    await publish(client, 10, Priority.HIGH)
    # 30 jobs over both priorities at 2 jobs/s per replica within 5 s: at least 3 replicas
    first = await eventually(lambda: _at_least(keda, knobs, 3.0), timeout=5)
    await publish(client, 30)
    second = await eventually(lambda: _at_least(keda, knobs, first + 2.9), timeout=5)
    assert (await keda.IsActive(ref(**knobs))).result is True

    await start_worker(function="tiny")
    await eventually(lambda: _at_most(keda, knobs, 0.0), timeout=30)
    assert (await keda.IsActive(ref(**knobs))).result is False
    assert second > first


async def _at_least(keda, knobs: dict[str, str], floor: float) -> float | None:
    value = await demand(keda, **knobs)
    return value if value >= floor else None


async def _at_most(keda, knobs: dict[str, str], ceiling: float) -> bool:
    return await demand(keda, **knobs) <= ceiling


async def test_ack_pending_jobs_count(keda, client) -> None:
    await keda.IsActive(ref())  # the scaler creates the consumers
    await publish(client, 6)
    # A consumer that took the jobs and has not acked them yet (a busy or stuck worker).
    sub = await client.js.pull_subscribe_bind(
        consumer_name("tiny", Priority.NORMAL), stream=JOBS_STREAM
    )
    held = await sub.fetch(6, timeout=5)
    assert len(held) == 6
    info = await client.js.consumer_info(JOBS_STREAM, consumer_name("tiny", Priority.NORMAL))
    assert info.num_pending == 0 and info.num_ack_pending == 6

    knobs = {"replicaThroughput": "1", "targetDrainSeconds": "2"}
    assert await eventually(lambda: _at_least(keda, knobs, 3.0), timeout=5)
    assert (await keda.IsActive(ref(**knobs))).result is True
    for msg in held:
        await msg.ack()
    await eventually(lambda: _at_most(keda, knobs, 0.0), timeout=15)
    await sub.unsubscribe()


async def test_redelivery_loop_stops_holding_after_the_poison_hold(keda, client) -> None:
    knobs = {"poisonHoldSeconds": "1"}
    await keda.IsActive(ref(**knobs))
    await publish(client, 1)
    sub = await client.js.pull_subscribe_bind(
        consumer_name("tiny", Priority.NORMAL), stream=JOBS_STREAM
    )
    (msg,) = await sub.fetch(1, timeout=5)
    await msg.nak()
    (again,) = await sub.fetch(1, timeout=5)
    assert again.metadata.num_delivered == 2  # in ack-pending, delivered twice: retrying
    await eventually(lambda: _active(keda, knobs), timeout=5)
    # Still unacked, but a job that keeps failing does not hold a replica for ever.
    await eventually(lambda: _inactive(keda, knobs), timeout=10)
    assert await demand(keda, **knobs) == 0.0
    await sub.unsubscribe()


async def _active(keda, knobs: dict[str, str]) -> bool:
    return (await keda.IsActive(ref(**knobs))).result


async def _inactive(keda, knobs: dict[str, str]) -> bool:
    return not (await keda.IsActive(ref(**knobs))).result


async def test_dead_lettered_poison_does_not_keep_replicas(
    keda, client, start_worker, tmp_path
) -> None:
    from tests.helpers import failing_model

    model = failing_model(tmp_path / "fails.onnx")
    await start_worker(
        function="tiny", model_path=model, max_deliver=2, nak_delay_s=0.05, warmup_batch_sizes=[]
    )
    inbox = await client.inbox()
    job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    results = await inbox.wait([job_id], timeout=30)
    assert results[job_id].error is not None
    assert results[job_id].error.code.value == "max_deliver_exceeded"
    dead = await client.js.stream_info("SURGE_DEAD")
    assert dead.state.messages == 1
    await eventually(lambda: _inactive(keda, {}), timeout=10)
    assert await demand(keda) == 0.0
    await inbox.close()


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({"function": ""}, "function"),
        ({"function": "a.b"}, "function"),
        ({"targetDrainSeconds": "soon"}, "targetDrainSeconds"),
        ({"replicaThroughput": "-1"}, "replicaThroughput"),
        ({"maxReplicas": "0"}, "maxReplicas"),
    ],
)
async def test_bad_metadata_is_invalid_argument(keda, metadata, fragment) -> None:
    bad = ref()
    for key, value in metadata.items():
        bad.scalerMetadata[key] = value
    for call in (keda.IsActive, keda.GetMetricSpec):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(bad)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in caught.value.details()
    stream = keda.StreamIsActive(bad)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (await keda.IsActive(ref())).result is False  # still serving


async def test_missing_function_and_unknown_metric(keda) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keda.IsActive(pb.ScaledObjectRef(name="x", namespace="y"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "function" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keda.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="other"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_nats_trouble_is_unavailable(keda, nats_server) -> None:
    assert (await keda.IsActive(ref())).result is False
    nats_server.stop()

    async def unavailable() -> bool:
        try:
            await keda.IsActive(ref())
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.UNAVAILABLE
        return False

    await eventually(unavailable, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keda.IsActive(ref(function="nsfw"))  # a watcher that cannot start
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
