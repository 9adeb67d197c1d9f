"""Failures: transient errors, dead letters, crashed and stopped workers, config drift."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.settings import DEAD_STREAM, RESULTS_STREAM, WorkerSettings, dead_subject
from function.contract.wire import DeadLetter, JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.local.processes import start_worker_process, stop_worker_processes, wait_ready
from function.transport.topology import TopologyMismatch, ensure_topology
from tests.conftest import WorkerFactory
from tests.helpers import failing_model, png_bytes, settled_consumer


async def _dead_letters(client: SurgeClient, function: str) -> list[DeadLetter]:
    letters = []
    seq = 1
    while True:
        try:
            raw = await client.js.get_msg(
                DEAD_STREAM, seq=seq, subject=dead_subject(function), next=True
            )
        except Exception:
            return letters
        assert raw.data is not None and raw.seq is not None
        letters.append(DeadLetter.model_validate_json(raw.data))
        seq = raw.seq + 1


async def test_transient_failure_retries_then_dead_letters(
    client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    model = failing_model(tmp_path / "fails.onnx")
    await start_worker(
        function="tiny", model_path=model, max_deliver=3, nak_delay_s=0.05, warmup_batch_sizes=[]
    )
    inbox = await client.inbox()
    job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=30))[job_id]
    assert result.status is JobStatus.ERROR
    assert result.error is not None and result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    assert result.attempts == 3
    letters = await _dead_letters(client, "tiny")
    assert [letter.job_id for letter in letters] == [job_id]
    assert letters[0].attempts == 3 and "Reshape" in letters[0].last_error.message
    assert letters[0].payload_b64  # the original job travels with the letter
    info = await settled_consumer(client.js, "surge-tiny-normal")
    assert info.num_pending == 0 and info.num_ack_pending == 0


def _env(model_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "SURGE_MODEL_DIR": str(model_dir),
        "SURGE_ACK_WAIT_S": "3",
        "SURGE_FETCH_TIMEOUT_S": "0.5",
        "SURGE_HEARTBEAT_INTERVAL_S": "0.2",
        "SURGE_MAX_BATCH": "4",
        **extra,
    }


async def _publish_and_count(
    client: SurgeClient, photos: dict[str, Path], count: int
) -> tuple[list[str], dict[str, list[Result]], asyncio.Task[None], SurgeClient]:
    """Publish `count` remove-bg jobs; collect every result message (duplicates too)."""
    seen: dict[str, list[Result]] = {}
    inbox_subject = client.nc.new_inbox()

    async def on_result(msg: object) -> None:
        result = Result.model_validate_json(msg.data)  # type: ignore[attr-defined]
        seen.setdefault(result.job_id, []).append(result)

    await client.nc.subscribe(inbox_subject, cb=on_result)
    image = photos["astronaut"].read_bytes()
    ids = [await client.submit(image, reply_to=inbox_subject) for _ in range(count)]
    return ids, seen, asyncio.create_task(asyncio.sleep(0)), client


async def _wait_for(predicate: object, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def _stored_results(client: SurgeClient, ids: list[str]) -> dict[str, Result]:
    stored = {}
    for job_id in ids:
        found = await client.result(job_id)
        if found is not None:
            stored[job_id] = found
    return stored


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_worker_stopped_mid_batch_loses_nothing(
    nats_server: EmbeddedNats,
    client: SurgeClient,
    model_dir: Path,
    photos: dict[str, Path],
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    ids, seen, _, _ = await _publish_and_count(client, photos, 24)
    env = _env(model_dir)
    first = start_worker_process(nats_server.url, "remove-bg", tmp_path / "w1.log", env)
    try:
        await wait_ready(nats_server.url, "remove-bg", 1, timeout=120)
        await _wait_for(lambda: len(seen) >= 3, timeout=60)
        first.send_signal(sig)
        code = await asyncio.to_thread(first.wait, 60)
        if sig is signal.SIGTERM:
            # uvicorn re-raises SIGTERM after its graceful shutdown: -15 after a clean drain.
            log = (tmp_path / "w1.log").read_text()
            assert code in (0, -signal.SIGTERM), log[-2000:]
            assert '"msg": "stopped"' in log and "drained:" in log
        answered_before = len(seen)
        assert answered_before < len(ids)
        second = start_worker_process(nats_server.url, "remove-bg", tmp_path / "w2.log", env)
        try:
            await _wait_for(lambda: set(ids) <= seen.keys(), timeout=150)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 60)
    finally:
        if first.poll() is None:
            first.kill()
    stored = await _stored_results(client, ids)
    assert set(stored) == set(ids)
    for job_id in ids:
        copies = seen[job_id]
        assert all(c.status is JobStatus.OK for c in copies)
        # One final result per job: any repeat is the stored result sent again.
        assert {c.finished_at for c in copies} == {stored[job_id].finished_at}
    info = await client.js.stream_info(RESULTS_STREAM)
    assert info.state.messages == len(ids)
    jobs = await settled_consumer(client.js, "surge-remove-bg-normal")
    assert jobs.num_pending == 0 and jobs.num_ack_pending == 0


async def test_topology_mismatch_is_reported_not_changed(nats_server: EmbeddedNats) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_topology(js, WorkerSettings(function="tiny", max_deliver=5))
    with pytest.raises(TopologyMismatch, match="max_deliver: server has 5, worker wants 9"):
        await ensure_topology(js, WorkerSettings(function="tiny", max_deliver=9))
    info = await js.consumer_info("SURGE_JOBS", "surge-tiny-normal")
    assert info.config.max_deliver == 5
    await nc.drain()


def _poison_env(model_dir: Path) -> dict[str, str]:
    """One delivery, a 1 s ack wait, and a 30 s pull request that stays first in line."""
    return _env(model_dir, SURGE_MAX_DELIVER="1", SURGE_ACK_WAIT_S="1", SURGE_FETCH_TIMEOUT_S="30")


@contextlib.asynccontextmanager
async def _frozen_worker(url: str, env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """A `tiny` worker that is ready, holds an open pull request, then freezes (SIGSTOP);
    killed on exit, as a worker that hangs and then dies."""
    frozen = start_worker_process(url, "tiny", log, env)
    try:
        await wait_ready(url, "tiny", 1, timeout=60)
        await asyncio.sleep(0.5)  # its 30 s pull request is now first in line
        frozen.send_signal(signal.SIGSTOP)
        yield
    finally:
        frozen.kill()
        frozen.wait()


async def test_job_stuck_in_a_frozen_worker_is_dead_lettered(
    nats_server: EmbeddedNats,
    client: SurgeClient,
    start_worker: WorkerFactory,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    """A job whose every delivery dies with its worker ends on the dead stream, not in limbo."""
    inbox = await client.inbox()
    async with _frozen_worker(nats_server.url, _poison_env(model_dir), tmp_path / "frozen.log"):
        await start_worker(function="tiny", max_deliver=1, ack_wait_s=1.0)
        job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
        result = (await inbox.wait([job_id], timeout=20))[job_id]
        assert result.status is JobStatus.ERROR
        assert result.error is not None
        assert result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
        assert [d.job_id for d in await _dead_letters(client, "tiny")] == [job_id]
        info = await client.js.stream_info("SURGE_JOBS")
        assert info.state.messages == 0


async def test_advisory_waits_for_a_worker_when_none_is_running(
    nats_server: EmbeddedNats, client: SurgeClient, model_dir: Path, tmp_path: Path
) -> None:
    """Scale to zero right after a job exhausted its deliveries: the next worker dead-letters it."""
    env = _poison_env(model_dir)
    inbox = await client.inbox()
    async with _frozen_worker(nats_server.url, env, tmp_path / "frozen.log"):
        job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
        await asyncio.sleep(3.0)  # ack_wait passes: JetStream gives up, the advisory is kept
        assert job_id not in inbox.results
    info = await client.js.stream_info("SURGE_ADVISORIES")
    assert info.state.messages == 1
    later = start_worker_process(nats_server.url, "tiny", tmp_path / "later.log", env)
    try:
        result = (await inbox.wait([job_id], timeout=30))[job_id]
    finally:
        stop_worker_processes([later])
    assert result.status is JobStatus.ERROR
    assert result.error is not None and result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    assert [d.job_id for d in await _dead_letters(client, "tiny")] == [job_id]
    assert (await client.js.stream_info("SURGE_JOBS")).state.messages == 0
    assert (await client.js.stream_info("SURGE_ADVISORIES")).state.messages == 0
