"""The scaler's standard gRPC health service (grpc.health.v1), as the kubelet's probes
call it: on the plaintext health port while KEDA's port needs mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from function.contract.settings import InvalidSettings, WorkerSettings
from function.local.nats_server import EmbeddedNats, free_port
from function.local.throwaway_pki import Pki, make_pki
from scaler.config import ScalerSettings
from scaler.server import SCALER_SERVICE, run_scaler
from tests.scaler.conftest import FAST, eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CALL_S = 2.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@asynccontextmanager
async def scaler(nats_url: str, pki: Pki) -> AsyncIterator[int]:
    """`run_scaler` as the manifests run it (mutual TLS on gRPC, a health port); yields
    the health port and stops the scaler on exit."""
    health_port = free_port()
    settings = FAST.model_copy(
        update={
            "grpc_host": "127.0.0.1",
            "grpc_port": free_port(),
            "health_port": health_port,
            "tls_cert": pki.server_cert,
            "tls_key": pki.server_key,
            "tls_client_ca": pki.ca,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_scaler(settings, WorkerSettings(nats_url=nats_url), stop))
    try:
        yield health_port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def status_of(port: int, service: str) -> int | None:
    """What a gRPC probe sees: the status of `service`, or None when nothing answers."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs lack the methods
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_S)
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)


async def test_probes_see_serving_once_nats_is_connected(
    nats_server: EmbeddedNats, pki: Pki
) -> None:
    async with scaler(nats_server.url, pki) as port:

        async def ready() -> bool:
            return await status_of(port, SCALER_SERVICE) == SERVING

        await eventually(ready, timeout=20, interval=0.2)
        assert await status_of(port, "") == SERVING  # the liveness probe's service


async def test_without_nats_it_is_alive_but_not_ready(pki: Pki) -> None:
    """NATS unreachable: the scaler keeps retrying, so liveness holds and readiness fails."""
    async with scaler(f"nats://127.0.0.1:{free_port()}", pki) as port:

        async def alive() -> bool:
            return await status_of(port, "") == SERVING

        await eventually(alive, timeout=20, interval=0.2)
        assert await status_of(port, SCALER_SERVICE) == NOT_SERVING


def test_the_scaler_has_its_own_ports() -> None:
    """Not the worker's 8080; two listeners on one port is one clear error."""
    default = ScalerSettings()
    ports = {default.grpc_port, default.metrics_port, WorkerSettings().http_port}
    assert len(ports) == 3
    with pytest.raises(InvalidSettings, match=r"SURGE_SCALER_HEALTH_PORT .*SURGE_SCALER_GRPC_PORT"):
        ScalerSettings(grpc_port=9090, health_port=9090)
