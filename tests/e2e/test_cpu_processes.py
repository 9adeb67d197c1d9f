"""A worker whose CPU stages run in processes (`SURGE_CPU_PROCESSES`) answers remove-bg
jobs through NATS exactly as one that runs them in threads, fails bad input without a
retry, and hands every slot back."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import numpy as np
from nats.aio.msg import Msg
from PIL import Image

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.wire import JobStatus, Result
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.function.engine.crashing_task import SLOW_WIDTH
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


async def test_processes_answer_as_threads_do(  # batch 1 both: the same model runs
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    inputs = _inputs(photos)
    threads = await start_worker(function="remove-bg", cpu_processes=0, max_batch=1)
    expected = await _run(client, inputs, "threads")
    assert threads.snapshot().cpu_processes == 0
    await threads.stop(timeout=10)

    worker = await start_worker(function="remove-bg", cpu_processes=2, max_batch=1)
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


def _noise_png(seed: int) -> bytes:
    """A noise PNG over the fast path's 32 KB, so a CPU process decodes it, and of the
    width that `CrashingTask` takes its time over."""
    shape = (1000, SLOW_WIDTH, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_cpu_processes_killed_mid_drain_lose_no_job_and_answer_each_once(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    task = "tests.function.engine.crashing_task:CrashingTask"
    worker = await start_worker(function="tiny", task=task, cpu_processes=2, max_batch=4)
    await _processes_ready(worker)
    assert worker.consumer is not None and worker.consumer.processes is not None
    processes = worker.consumer.processes
    seen: dict[str, list[Result]] = {}
    subject = client.nc.new_inbox()

    async def on_result(msg: Msg) -> None:
        result = Result.model_validate_json(msg.data)
        seen.setdefault(result.job_id, []).append(result)

    await client.nc.subscribe(subject, cb=on_result)
    inputs = [_noise_png(seed) for seed in range(30)]
    ids = await asyncio.gather(
        *(client.submit(data, function="tiny", reply_to=subject) for data in inputs)
    )
    killed = 0
    while killed < 3 and len(seen) < len(ids):  # kill a busy child, up to three times
        busy = [c.process.pid for c in processes.children._children if c.calls]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.005)
    for _ in range(600):
        if len(seen) == len(ids):
            break
        await asyncio.sleep(0.1)
    assert killed == 3 and processes.replaced >= killed  # each job takes SLOW_S in a child
    assert set(seen) == set(ids)
    assert all(len(results) == 1 for results in seen.values())  # exactly one final result
    assert all(results[0].status is JobStatus.OK for results in seen.values())
    assert any(results[0].attempts > 1 for results in seen.values())  # some were retried
    info = await settled_consumer(client.js, "surge-tiny-normal")
    assert info.num_pending == 0 and info.num_ack_pending == 0
    for _ in range(200):  # the last replacement may still be starting
        if len(processes.children.pids) == 2:
            break
        await asyncio.sleep(0.05)
    assert processes.ready and len(processes.children.pids) == 2
    assert all(slot in processes._free for slot in processes._slots)


async def test_a_stop_while_the_cpu_processes_start_does_not_wait_for_them(
    start_worker: WorkerFactory,
) -> None:
    task = "tests.function.engine.crashing_task:SlowStartingTask"  # 5 s to start a process
    worker = await start_worker(function="tiny", task=task, cpu_processes=1)
    assert worker.consumer is not None and worker.consumer.processes is not None
    assert not worker.consumer.processes.ready
    started = time.monotonic()
    await worker.stop(timeout=10)
    assert time.monotonic() - started < 3  # it waited for the processes before: 5 s
