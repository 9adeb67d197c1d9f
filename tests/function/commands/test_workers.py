"""What a wait without a result says about the function's workers (from heartbeats)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats

from function.commands.workers import WorkerSightings
from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.settings import heartbeat_subject
from function.local.nats_server import EmbeddedNats


def _beat(worker: str, state: WorkerState, function: str = "remove-bg") -> Heartbeat:
    return Heartbeat(worker_id=worker, function=function, state=state, started_at=datetime.now(UTC))


def test_no_heartbeat_says_no_worker_runs_and_how_to_start_one() -> None:
    advice = WorkerSightings("remove-bg").advice(waited_s=5)
    assert advice.startswith("no remove-bg worker is running (no heartbeat in 5 s)")
    assert "surge worker -f remove-bg" in advice and "surge result JOB_ID" in advice


def test_stopped_workers_are_not_alive() -> None:
    sightings = WorkerSightings("remove-bg")
    sightings.latest["w1"] = _beat("w1", WorkerState.STOPPED)
    assert sightings.advice(5).startswith("no remove-bg worker is running (every one stopped)")


def test_live_workers_are_counted_by_state() -> None:
    sightings = WorkerSightings("remove-bg")
    sightings.latest = {
        "w1": _beat("w1", WorkerState.READY),
        "w2": _beat("w2", WorkerState.WARMING),
    }
    advice = sightings.advice(5)
    assert advice.startswith("2 remove-bg worker(s) alive (1 ready, 1 warming)")
    assert "--timeout" in advice


async def test_heartbeats_are_heard_and_garbage_is_ignored(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        sightings = await WorkerSightings.listen(nc, "remove-bg")
        subject = heartbeat_subject("remove-bg")
        await nc.publish(subject, b"not a heartbeat")
        await nc.publish(subject, _beat("w1", WorkerState.READY).model_dump_json().encode())
        await asyncio.wait_for(sightings.heard.wait(), 10)  # the garbage came first
        await sightings.close()
        assert [beat.worker_id for beat in sightings.alive()] == ["w1"]
    finally:
        await nc.close()
