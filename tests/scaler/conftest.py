"""Scaler fixtures: a hub on the test's nats-server, the gRPC server, a KEDA-like client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ScalerSettings
from scaler.hub import ScalerHub
from scaler.server import start_grpc

FAST = ScalerSettings(poll_interval_s=0.1, stale_after_s=1.0, plan_refresh_s=0.2, metrics_port=0)


def ref(function: str = "tiny", **metadata: str) -> pb.ScaledObjectRef:
    """What KEDA sends: the ScaledObject's name, namespace and the trigger's metadata."""
    return pb.ScaledObjectRef(
        name=f"surge-{function}",
        namespace="surge",
        scalerMetadata={"scalerAddress": "surge-scaler.surge.svc:9090", "function": function}
        | metadata,
    )


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"not true within {timeout}s (last: {last!r})")


@pytest.fixture
async def hub(nats_server: EmbeddedNats) -> AsyncIterator[ScalerHub]:
    worker = WorkerSettings(nats_url=nats_server.url, ack_wait_s=10.0)
    scaler_hub = await ScalerHub.connect(nats_server.url, settings=FAST, worker=worker)
    yield scaler_hub
    await scaler_hub.close()


@pytest.fixture
async def keda(hub: ScalerHub) -> AsyncIterator[pb_grpc.ExternalScalerAsyncStub]:
    """A gRPC client of the scaler, as KEDA's external scaler client is."""
    server, port = await start_grpc(hub, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.ExternalScalerStub(channel)
    await channel.close()
    await server.stop(0.5)
