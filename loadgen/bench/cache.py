"""What the result cache saves on a repeat-heavy spike: `python -m loadgen.bench.cache`.

One nats-server and one in-process `remove-bg` worker per mode (cache off, then on),
fresh each time. A spike of `--jobs` jobs drawn from `--distinct` photos (the test
photos, scaled to at most 400 px) arrives open-loop at `--rate` jobs/s; then, one job
at a time, `--probes` repeats (hits when the cache is on) alternate with never-seen
variants (always misses). Prints, per mode: the spike's jobs/s, the inferences run, the
hit and miss p50 (worker-measured publish-to-result) in the spike and in the probes.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image

from function.client import SurgeClient
from function.contract.settings import WorkerSettings
from function.contract.wire import JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.models import fetch_photos
from function.worker import Worker

__all__ = ["Mode", "main", "measure"]

MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
FUNCTION = "remove-bg"


@dataclass
class Mode:
    """One mode's figures."""

    cache: bool
    jobs_per_s: float
    inferences: int
    spike_hits: list[float]
    spike_misses: list[float]
    probe_hits: list[float]
    probe_misses: list[float]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def inputs(distinct: int) -> list[Image.Image]:
    """`distinct` different pictures: the test photos and crops of them, <= 400 px."""
    photos = [Image.open(p).convert("RGB") for p in fetch_photos(MODEL_DIR).values()]
    for photo in photos:
        photo.thumbnail((400, 400))
    made = list(photos)
    while len(made) < distinct:
        photo = photos[len(made) % len(photos)]
        made.append(photo.crop((0, 0, photo.width * 3 // 4, photo.height * 3 // 4)))
    return made[:distinct]


def _variant(image: Image.Image, seed: int) -> bytes:
    """The same picture with one pixel changed: new bytes, never cached."""
    changed = image.copy()
    changed.putpixel((seed % image.width, 0), (seed % 256, 0, 0))
    return _png(changed)


def _p50(values: list[float]) -> str:
    return f"{float(np.median(values)):7.1f}" if values else "      -"


async def _one(client: SurgeClient, data: bytes) -> Result:
    inbox = await client.inbox()
    job_id = await client.submit(data, function=FUNCTION, reply_to=inbox.subject)
    return (await inbox.wait([job_id], timeout=120))[job_id]


async def measure(cache: bool, jobs: int, distinct: int, rate: float, probes: int) -> Mode:
    """Run one mode on a fresh server and worker."""
    pictures = inputs(distinct)
    spike = [_png(p) for p in pictures]
    with tempfile.TemporaryDirectory() as folder, EmbeddedNats(store_dir=Path(folder)) as server:
        settings = WorkerSettings(
            nats_url=server.url, function=FUNCTION, model_dir=MODEL_DIR, cache=cache
        )
        worker = Worker(settings)
        await worker.start()
        try:
            async with await SurgeClient.connect(server.url) as client:
                inbox = await client.inbox()
                started = time.perf_counter()
                ids = []
                for i in range(jobs):
                    await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                    data = spike[i % distinct]
                    ids.append(await client.submit(data, function=FUNCTION, reply_to=inbox.subject))
                results = await inbox.wait(ids, timeout=600)
                elapsed = time.perf_counter() - started
                assert worker.consumer is not None
                inferences = sum(worker.consumer.batch_sizes)
                probed: list[Result] = []
                for i in range(probes):
                    repeat = spike[i % distinct]
                    probed.append(await _one(client, repeat))
                    probed.append(await _one(client, _variant(pictures[i % distinct], i + 1)))
        finally:
            await worker.stop(timeout=10)
    done = [r for r in results.values() if r.status is JobStatus.OK]
    if len(done) != jobs:
        raise RuntimeError(f"{jobs - len(done)} of {jobs} jobs were not answered ok")

    def split(rs: list[Result], hit: bool) -> list[float]:
        return [r.timings.total_ms for r in rs if r.timings.cache_hit is hit]

    return Mode(
        cache,
        jobs / elapsed,
        inferences,
        split(done, True),
        split(done, False),
        split(probed, True),
        split(probed, False),
    )


def main(
    jobs: Annotated[int, typer.Option(help="Jobs in the spike.")] = 60,
    distinct: Annotated[int, typer.Option(help="Different pictures among them.")] = 6,
    rate: Annotated[float, typer.Option(help="Spike arrivals per second.")] = 20.0,
    probes: Annotated[int, typer.Option(help="Quiet repeat/new pairs after it.")] = 10,
) -> None:
    """Cache off, then on: jobs/s, inferences, hit and miss latency (p50, ms)."""
    print(f"{jobs} {FUNCTION} jobs from {distinct} photos at {rate:g}/s, one worker, then")
    print(f"{probes} quiet repeats and {probes} quiet new pictures, one at a time")
    print("cache  jobs/s  inferences  spike hit p50  spike miss p50  quiet hit p50  quiet miss p50")
    for cache in (False, True):
        mode = asyncio.run(measure(cache, jobs, distinct, rate, probes))
        print(
            f"{'on ' if cache else 'off'}   {mode.jobs_per_s:6.1f}  {mode.inferences:10d}"
            f"        {_p50(mode.spike_hits)}         {_p50(mode.spike_misses)}"
            f"        {_p50(mode.probe_hits)}         {_p50(mode.probe_misses)}"
        )
    print("p50 in ms, publish to result as the worker measured it (timings.total_ms)")


if __name__ == "__main__":
    typer.run(main)
