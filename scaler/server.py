"""KEDA `external-push` scaler over gRPC: a thin servicer on top of `ScalerHub`.

    surge scaler serve      # gRPC on :9090, Prometheus metrics on :9092

gRPC is plaintext unless `SURGE_SCALER_TLS_CERT`/`_KEY` are set (TLS), and with
`SURGE_SCALER_TLS_CLIENT_CA` it requires KEDA's client certificate (mutual TLS): the
trigger's TriggerAuthentication gives KEDA `caCert`, `tlsClientCert`, `tlsClientKey`.

Every call carries the trigger's `scalerMetadata` (see `scaler.config`). Status codes:
INVALID_ARGUMENT for bad metadata or an unknown metric name, UNAVAILABLE when NATS
cannot be reached (or the state is stale), INTERNAL when the JetStream API refuses.
`GetMetricSpec` asks for a target of 1 replica, so the HPA's `ceil(metric / target)`
is the replica demand that `GetMetrics` reports.

Health: the standard `grpc.health.v1.Health` service, on the gRPC port and, when
`health_port` is set, alone on that plaintext port (for the kubelet's gRPC probes).
The server as a whole (service "") is SERVING while the process runs: the liveness
probe. `externalscaler.ExternalScaler` is SERVING once NATS is connected and KEDA's
contract is served, NOT_SERVING before and while shutting down: the readiness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import start_http_server

from function.contract.settings import WorkerSettings
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import MetadataError, ScalerMetadata, ScalerSettings, ServerTls, metric_name
from scaler.hub import ScalerHub
from scaler.metrics import SCALER_METRICS as M
from scaler.policy import Decision
from scaler.watcher import FunctionWatcher, WatchError

__all__ = [
    "SCALER_SERVICE",
    "ExternalScaler",
    "run_scaler",
    "server_credentials",
    "start_grpc",
    "start_health",
]

log = logging.getLogger("surge.scaler.server")

Context = grpc.aio.ServicerContext[Any, Any]
SCALER_SERVICE = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
Health = health_aio.HealthServicer


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    """The four RPCs of KEDA's `externalscaler.ExternalScaler` service."""

    def __init__(self, hub: ScalerHub, stream_refresh_s: float = 1.0) -> None:
        self.hub = hub
        self.stream_refresh_s = stream_refresh_s

    async def _abort(
        self, context: Context, method: str, code: grpc.StatusCode, msg: str
    ) -> NoReturn:
        M.requests.labels(method, code.name).inc()
        await context.abort(code, msg)
        raise AssertionError("unreachable")  # context.abort raises

    async def _meta(self, ref: pb.ScaledObjectRef, context: Context, method: str) -> ScalerMetadata:
        try:
            return ScalerMetadata.parse(dict(ref.scalerMetadata))
        except MetadataError as exc:
            await self._abort(context, method, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _watch_error(self, context: Context, method: str, exc: WatchError) -> NoReturn:
        code = (
            grpc.StatusCode.UNAVAILABLE if exc.code == "unavailable" else grpc.StatusCode.INTERNAL
        )
        await self._abort(context, method, code, str(exc))

    async def _watcher(
        self, meta: ScalerMetadata, context: Context, method: str
    ) -> FunctionWatcher:
        try:
            return await self.hub.watcher(meta.function)
        except WatchError as exc:
            await self._watch_error(context, method, exc)

    async def _decide(self, request: pb.ScaledObjectRef, context: Context, method: str) -> Decision:
        meta = await self._meta(request, context, method)
        watcher = await self._watcher(meta, context, method)
        try:
            decision = self.hub.decide_now(watcher, meta.policy())
        except WatchError as exc:
            await self._watch_error(context, method, exc)
        M.requests.labels(method, "OK").inc()
        return decision

    async def IsActive(self, request: pb.ScaledObjectRef, context: Context) -> pb.IsActiveResponse:
        decision = await self._decide(request, context, "IsActive")
        return pb.IsActiveResponse(result=decision.active)

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: Context
    ) -> AsyncIterator[pb.IsActiveResponse]:
        """Push the current activity at once, then every change (looked at every poll)."""
        method = "StreamIsActive"
        meta = await self._meta(request, context, method)
        watcher = await self._watcher(meta, context, method)
        policy = meta.policy()
        M.requests.labels(method, "OPENED").inc()
        last: bool | None = None
        while True:
            try:
                active = self.hub.decide_now(watcher, policy).active
            except WatchError as exc:
                await self._watch_error(context, method, exc)
            if active != last:
                last = active
                M.pushes.labels(meta.function, str(active).lower()).inc()
                log.info("%s: pushing active=%s", meta.function, active)
                yield pb.IsActiveResponse(result=active)
            await watcher.next_poll(self.stream_refresh_s)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: Context
    ) -> pb.GetMetricSpecResponse:
        meta = await self._meta(request, context, "GetMetricSpec")
        M.requests.labels("GetMetricSpec", "OK").inc()
        spec = pb.MetricSpec(
            metricName=metric_name(meta.function), targetSize=1, targetSizeFloat=1.0
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: Context
    ) -> pb.GetMetricsResponse:
        method = "GetMetrics"
        meta = await self._meta(request.scaledObjectRef, context, method)
        name = metric_name(meta.function)
        if request.metricName and not request.metricName.endswith(name):
            msg = f"unknown metric {request.metricName!r}: this trigger serves {name!r}"
            await self._abort(context, method, grpc.StatusCode.INVALID_ARGUMENT, msg)
        decision = await self._decide(request.scaledObjectRef, context, method)
        value = pb.MetricValue(
            metricName=request.metricName or name,
            metricValue=math.ceil(decision.demand - 1e-9),
            metricValueFloat=decision.demand,
        )
        return pb.GetMetricsResponse(metricValues=[value])


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """TLS credentials; with a client CA, client certificates are required and verified."""
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=tls.client_ca_pem,
        require_client_auth=tls.client_ca_pem is not None,
    )


async def start_grpc(
    hub: ScalerHub,
    host: str,
    port: int,
    tls: ServerTls | None = None,
    health: Health | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve `ExternalScaler` (and `health`, if given) on `host:port` (0: any free port),
    over TLS when `tls` is given; returns the bound port."""
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(ExternalScaler(hub), server)
    if health is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{host}:{port}"
    if tls is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(tls))
    await server.start()
    mode = "plaintext" if tls is None else tls.describe()
    log.info("KEDA external scaler listening on %s:%d, %s", host, bound, mode)
    return server, bound


async def start_health(host: str, port: int, health: Health) -> tuple[grpc.aio.Server, int]:
    """Serve only `grpc.health.v1` on plaintext `host:port` (0: any free port), for probes
    that speak no TLS; returns the bound port."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("gRPC health checks on %s:%d, plaintext", host, bound)
    return server, bound


async def _connect(url: str, settings: ScalerSettings, worker: WorkerSettings) -> ScalerHub:
    delay = 0.5
    while True:
        try:
            return await ScalerHub.connect(url, settings=settings, worker=worker)
        except (OSError, nats.errors.Error) as exc:
            log.warning("cannot reach NATS at %s (%r); retrying in %.1fs", url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _connect_until(
    stop: asyncio.Event, url: str, settings: ScalerSettings, worker: WorkerSettings
) -> ScalerHub | None:
    """The hub once NATS answers, or None when `stop` is set first (SIGTERM while
    NATS is away still exits)."""
    connecting = asyncio.ensure_future(_connect(url, settings, worker))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if connecting.done():
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await connecting
    return None


async def run_scaler(
    settings: ScalerSettings, worker: WorkerSettings, stop: asyncio.Event | None = None
) -> None:
    """Serve gRPC and metrics until `stop` is set or SIGTERM/SIGINT arrives.

    Bad TLS settings raise `ScalerTlsError` at once, before NATS is waited for."""
    tls = settings.server_tls()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics on %s:%d", settings.metrics_host, settings.metrics_port)
    health = Health()
    await health.set(SCALER_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    probes = None
    if settings.health_port:
        probes, _ = await start_health(settings.grpc_host, settings.health_port, health)
    try:
        hub = await _connect_until(stop, worker.nats_url, settings, worker)
        if hub is None:
            return
        server, _ = await start_grpc(hub, settings.grpc_host, settings.grpc_port, tls, health)
        await health.set(SCALER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await health.enter_graceful_shutdown()
            await server.stop(settings.grace_s)
            await hub.close()
    finally:
        if probes is not None:
            await probes.stop(0)
