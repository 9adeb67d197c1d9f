"""Activation latency: a job published on an idle function -> `true` on StreamIsActive.

    .venv/bin/python -m scaler.bench_activation [--trials 20] [--poll-ms 100]

Starts a nats-server on loopback and the scaler's gRPC server, opens StreamIsActive
as KEDA does, and for each trial publishes one job, times the `true` push, then
acks the job (as a worker would) and waits for `false`. Prints the median and max
next to what KEDA's polling gives: with the built-in `nats-jetstream` scaler a job
waits for the next poll, up to `pollingInterval` (30 s by default, 5 s in
manifests/scaling), half of it on average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import grpc
import nats

from function.contract.settings import JOBS_STREAM, Header, Priority, consumer_name, job_subject
from function.local.nats_server import EmbeddedNats
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ScalerSettings
from scaler.hub import ScalerHub
from scaler.server import start_grpc

__all__ = ["measure"]

KEDA_DEFAULT_POLLING_S = 30.0
MANIFEST_POLLING_S = 5.0


async def measure(url: str, trials: int, poll_s: float, function: str = "tiny") -> list[float]:
    """Seconds from publish to the `true` push, one per trial."""
    settings = ScalerSettings(poll_interval_s=poll_s, metrics_port=0)
    hub = await ScalerHub.connect(url, settings=settings)
    server, port = await start_grpc(hub, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.ExternalScalerStub(channel)
    ref = pb.ScaledObjectRef(name="bench", namespace="surge", scalerMetadata={"function": function})
    stream = stub.StreamIsActive(ref)
    nc = await nats.connect(url)
    js = nc.jetstream()
    latencies = []
    try:
        first = await asyncio.wait_for(stream.read(), 10)
        assert isinstance(first, pb.IsActiveResponse) and not first.result, "not idle at start"
        worker = await js.pull_subscribe_bind(
            consumer_name(function, Priority.NORMAL), stream=JOBS_STREAM
        )
        for trial in range(trials):
            await asyncio.sleep(0.05 + (trial % 7) * 0.013)  # land at varied poll phases
            started = time.perf_counter()
            await js.publish(
                job_subject(Priority.NORMAL, function),
                b"\x89PNG",
                headers={Header.MSG_ID: f"bench-{time.time_ns()}"},
            )
            pushed = await asyncio.wait_for(stream.read(), 10)
            latencies.append(time.perf_counter() - started)
            assert isinstance(pushed, pb.IsActiveResponse) and pushed.result
            for msg in await worker.fetch(1, timeout=5):
                await msg.ack()
            idle = await asyncio.wait_for(stream.read(), 30)
            assert isinstance(idle, pb.IsActiveResponse) and not idle.result
    finally:
        stream.cancel()
        await nc.drain()
        await channel.close()
        await server.stop(0.5)
        await hub.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--poll-ms", type=float, default=100.0)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    with EmbeddedNats() as server:
        latencies = asyncio.run(measure(server.url, args.trials, args.poll_ms / 1000))
    median, worst = statistics.median(latencies), max(latencies)
    figures = {
        "trials": len(latencies),
        "poll_interval_ms": args.poll_ms,
        "median_ms": round(median * 1000, 1),
        "max_ms": round(worst * 1000, 1),
        "keda_polling_default_s": KEDA_DEFAULT_POLLING_S,
        "keda_polling_manifest_s": MANIFEST_POLLING_S,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"activation latency, job published -> true on StreamIsActive ({len(latencies)} trials)")
    print(
        f"  surge scaler (poll {args.poll_ms:.0f} ms): median {median * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms"
    )
    print(
        f"  KEDA nats-jetstream polling: up to {KEDA_DEFAULT_POLLING_S:.0f} s by default "
        f"(median ~{KEDA_DEFAULT_POLLING_S / 2:.0f} s); {MANIFEST_POLLING_S:.0f} s in "
        f"manifests/scaling (median ~{MANIFEST_POLLING_S / 2:.1f} s)"
    )


if __name__ == "__main__":
    main()
