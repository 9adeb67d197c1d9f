"""A worker whose CPU stages run in processes (`SURGE_CPU_PROCESSES`) answers remove-bg
jobs through NATS exactly as one that runs them in threads, fails bad input without a
retry, and hands every slot back."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.wire import JobStatus, Result
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.helpers import settled_consumer

OUTPUTS = ("mask", "cutout")


def _inputs(photos: dict[str, Path]) -> dict[str, bytes]:
    """Inputs over the fast path's 32 KB, so they go to the processes: PNG and JPEG."""
    made = {}
    for name, kind in (("astronaut", "PNG"), ("chelsea", "JPEG"), ("coffee", "PNG")):
        buffer = io.BytesIO()
        Image.open(photos[name]).convert("RGB").save(buffer, format=kind)
        made[name] = buffer.getvalue()
    return made


async def _run(client: SurgeClient, inputs: dict[str, bytes], tag: str) -> dict[str, Result]:
    inbox = await client.inbox()
    ids = {}
    for name, data in inputs.items():
        ids[name] = await client.submit(
            data,
            function="remove-bg",
            outputs=OUTPUTS,
            reply_to=inbox.subject,
            job_id=f"{tag}-{name}",
        )
    results = await inbox.wait(list(ids.values()), timeout=60)
    return {name: results[job_id] for name, job_id in ids.items()}


async def _processes_ready(worker: Worker) -> None:
    assert worker.consumer is not None
    processes = worker.consumer.processes
    assert processes is not None
    for _ in range(600):
        if processes.ready:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the CPU processes never became ready")


async def test_processes_answer_as_threads_do(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    inputs = _inputs(photos)
    threads = await start_worker(function="remove-bg", cpu_processes=0, max_batch=2)
    expected = await _run(client, inputs, "threads")
    assert threads.snapshot().cpu_processes == 0
    await threads.stop(timeout=10)

    worker = await start_worker(function="remove-bg", cpu_processes=2, max_batch=2)
    await _processes_ready(worker)
    assert worker.snapshot().cpu_processes == 2
    got = await _run(client, inputs, "processes")
    for name in inputs:
        assert got[name].status is JobStatus.OK, got[name].error
        assert got[name].outputs == expected[name].outputs, name

    inbox = await client.inbox()
    bad = b"\x89PNG\r\n\x1a\n" + b"\x00" * 60_000  # over 32 KB: decoded in a process
    job_id = await client.submit(bad, function="remove-bg", reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=30))[job_id]
    assert result.error is not None and result.error.code is ErrorCode.BAD_IMAGE
    assert result.attempts == 1
    info = await settled_consumer(client.js, "surge-remove-bg-normal")
    assert info.num_pending == 0 and info.num_ack_pending == 0 and info.num_redelivered == 0
    assert worker.consumer is not None
    processes = worker.consumer.processes
    assert processes is not None and len(processes._free) == len(processes._slots) > 0
    assert processes.replaced == 0
