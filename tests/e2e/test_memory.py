"""A worker's memory is admitted by decoded pixels: small files of huge pictures, mixed
with ordinary jobs, keep its resident set within the pixel budget (issue 9, finding 6)."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from pathlib import Path

import psutil
from PIL import Image

from function.client import SurgeClient
from function.contract.settings import Priority
from function.contract.wire import JobStatus
from function.local.nats_server import EmbeddedNats, free_port
from function.local.processes import start_worker_process, stop_worker_processes, wait_ready
from tests.conftest import WorkerFactory

FUNCTION = "tiny"
BUDGET = 72_000_000  # pixels: two 6000x6000 decodes at once
MARGIN = 64 * 2**20  # interpreter, NATS buffers, results in flight
SIDE = 6000


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_variant(png: bytes, index: int) -> bytes:
    """The same picture with a tEXt chunk after IHDR: distinct bytes, no re-encoding."""
    body = b"surge\x00" + str(index).encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]


def _jpeg_variant(jpeg: bytes, index: int) -> bytes:
    """The same picture with a COM segment after SOI."""
    body = f"surge {index}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


async def test_huge_pictures_in_small_files_stay_within_the_pixel_budget(
    nats_server: EmbeddedNats,
    client: SurgeClient,
    model_dir: Path,
    photos: dict[str, Path],
    tmp_path: Path,
) -> None:
    png = _encode(Image.new("RGB", (SIDE, SIDE), (30, 120, 200)), "PNG")
    jpeg = _encode(Image.new("RGB", (SIDE, SIDE), (200, 120, 30)), "JPEG")
    webp = _encode(Image.new("RGB", (4000, 4000), (90, 90, 90)), "WEBP")  # peak 4 x 16 M
    ordinary = [path.read_bytes() for path in photos.values()]
    env = {
        "SURGE_MODEL_DIR": str(model_dir),
        "SURGE_PIXEL_BUDGET": str(BUDGET),
        "SURGE_HTTP_PORT": str(free_port()),
        "SURGE_HEARTBEAT_INTERVAL_S": "0.2",
        "SURGE_FETCH_TIMEOUT_S": "0.5",
    }
    worker = start_worker_process(nats_server.url, FUNCTION, tmp_path / "worker.log", env)
    try:
        await wait_ready(nats_server.url, FUNCTION, 1, timeout=60)
        process = psutil.Process(worker.pid)
        inbox = await client.inbox()
        warm = [
            await client.submit(image, function=FUNCTION, reply_to=inbox.subject)
            for image in ordinary * 2
        ]
        await inbox.wait(warm, timeout=30)
        await asyncio.sleep(0.5)
        steady = process.memory_info().rss
        peak = steady
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        payloads = [_png_variant(png, i) for i in range(16)]
        payloads += [_jpeg_variant(jpeg, i) for i in range(4)] + [webp]
        ids = []
        for index, payload in enumerate(payloads):
            ids.append(await client.submit(payload, function=FUNCTION, reply_to=inbox.subject))
            priority = Priority.HIGH if index % 2 else Priority.NORMAL
            photo = ordinary[index % len(ordinary)]
            ids.append(
                await client.submit(
                    photo, function=FUNCTION, priority=priority, reply_to=inbox.subject
                )
            )
        results = await inbox.wait(ids, timeout=90)
        elapsed = time.monotonic() - started
        done.set()
        await sampler
    finally:
        stop_worker_processes([worker])
    assert {job_id: r.status for job_id, r in results.items()} == dict.fromkeys(ids, JobStatus.OK)
    bound = steady + 4 * BUDGET + MARGIN
    mib = 2**20
    print(
        f"\n{len(ids)} jobs in {elapsed:.1f}s; steady {steady / mib:.0f} MiB, "
        f"peak {peak / mib:.0f} MiB (+{(peak - steady) / mib:.0f}), bound {bound / mib:.0f} MiB"
    )
    assert peak <= bound, f"peak {peak / mib:.0f} MiB over {bound / mib:.0f} MiB"


async def test_a_one_pixel_budget_serialises_jobs_and_drains(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    """Every job is over the budget, so each runs alone; a drain while jobs wait for
    pixels hands them back at once instead of decoding them."""
    images = [_encode(Image.new("RGB", (1500, 1500), (i, 40, 90)), "PNG") for i in range(24)]
    inbox = await client.inbox()
    ids = [
        await client.submit(
            image,
            function=FUNCTION,
            priority=Priority.HIGH if i % 3 == 0 else Priority.NORMAL,
            reply_to=inbox.subject,
        )
        for i, image in enumerate(images[:12])
    ]
    worker = await start_worker(function=FUNCTION, pixel_budget=1, max_batch=4)
    results = await inbox.wait(ids, timeout=60)
    assert {r.status for r in results.values()} == {JobStatus.OK}
    assert set(results) == set(ids)
    assert max(r.timings.batch_size for r in results.values()) == 1  # one image at a time
    more = [
        await client.submit(image, function=FUNCTION, reply_to=inbox.subject)
        for image in images[12:]
    ]
    await inbox.wait(more[:1], timeout=30)
    started = time.monotonic()
    await worker.stop(timeout=20)
    assert time.monotonic() - started < 10
    # Handed back, not left to expire: a new worker has them well before ack_wait (10 s).
    # A message the server sent while the feed closed reaches no one and comes back only
    # after ack_wait (a known race, narrow): most must be quick, none may be lost.
    await start_worker(function=FUNCTION)
    quick = await inbox.wait(more, timeout=8)
    assert len(quick) >= len(more) // 2, f"only {len(quick)} of {len(more)} handed back"
    results = await inbox.wait(more, timeout=15)
    assert set(results) == set(more)
    assert {r.status for r in results.values()} == {JobStatus.OK}
