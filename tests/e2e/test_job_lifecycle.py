"""A job's life on a real server with real workers: status through its states, cancel
while queued, while running and after done, and a whole campaign called off."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobEvent, JobState, JobView
from function.contract.settings import EVENTS_SUBJECT_PREFIX, Header, events_subject
from function.contract.wire import JobStatus
from function.transport.lifecycle import JobLifecycle
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes

pytestmark = pytest.mark.timeout(120)


class Replies:
    """Every reply on one inbox, counted per job id."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.statuses: dict[str, list[str]] = {}

    async def on_msg(self, msg: Msg) -> None:
        job_id = (msg.headers or {}).get(Header.JOB_ID, "")
        self.count[job_id] += 1
        code = (msg.headers or {}).get(Header.ERROR_CODE, "")
        self.statuses.setdefault(job_id, []).append(code or "ok")

    async def until(self, job_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(self.count[j] == 0 for j in job_ids):
            assert time.monotonic() < deadline, [j for j in job_ids if not self.count[j]]
            await asyncio.sleep(0.05)


async def _replies(client: SurgeClient) -> tuple[Replies, str]:
    replies, inbox = Replies(), client.nc.new_inbox()
    await client.nc.subscribe(inbox, cb=replies.on_msg)
    return replies, inbox


async def _state_becomes(
    jobs: JobLifecycle, job_id: str, wanted: JobState, timeout: float
) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        view = await jobs.status(job_id)
        if view.state is wanted or time.monotonic() > deadline:
            return view
        await asyncio.sleep(0.02)


async def test_status_follows_a_job_and_cancel_removes_a_queued_one(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    replies, inbox = await _replies(client)
    events: list[bytes] = []
    jobs = JobLifecycle(client.nc)
    ids = [await client.submit(png_bytes(), function="tiny", reply_to=inbox) for _ in range(3)]

    async def on_event(msg: Msg) -> None:
        events.append(msg.data)

    await client.nc.subscribe(events_subject(ids[1]), cb=on_event)
    states: dict[str, list[str]] = {}

    async def on_any_event(msg: Msg) -> None:
        event = JobEvent.model_validate_json(msg.data)
        states.setdefault(event.job_id, []).append(event.state.value)

    await client.nc.subscribe(f"{EVENTS_SUBJECT_PREFIX}.>", cb=on_any_event)

    queued = await jobs.status(ids[0])
    assert queued.state is JobState.QUEUED and queued.function == "tiny"
    assert queued.submitted_at is not None and queued.result is None

    cancelled = await jobs.cancel(ids[1])
    assert cancelled.state is JobState.CANCELLED
    assert "before any worker ran it" in cancelled.detail
    again = await jobs.cancel(ids[1])
    assert again.state is JobState.CANCELLED and "nothing to cancel" in again.detail

    worker = await start_worker(function="tiny")
    await replies.until(ids, timeout=30)
    done = await jobs.status(ids[0])
    assert done.state is JobState.DONE and done.result is not None
    assert done.result.status is JobStatus.OK
    after = await jobs.cancel(ids[2])
    assert after.state is JobState.DONE and "already done" in after.detail
    view = await jobs.status(ids[1])
    assert view.state is JobState.CANCELLED and view.result is not None
    assert view.result.error is not None and view.result.error.code is ErrorCode.CANCELLED
    # each job answered once; the cancelled one never ran
    assert replies.count == Counter({ids[0]: 1, ids[1]: 1, ids[2]: 1})
    assert replies.statuses[ids[1]] == ["cancelled"]
    assert worker.consumer is not None and worker.consumer.completed == 2
    await client.nc.flush()
    assert any(b'"cancelled"' in e for e in events)
    await asyncio.sleep(0.2)  # events are best effort and published off the job's path
    assert states[ids[0]] == ["running", "done"] and states[ids[1]] == ["cancelled"]
    assert (await jobs.status("never-submitted")).state is JobState.UNKNOWN


async def test_a_running_job_cancelled_is_answered_once_and_its_output_dropped(
    client: SurgeClient, start_worker: WorkerFactory, photos: dict[str, Path]
) -> None:
    replies, inbox = await _replies(client)
    jobs = JobLifecycle(client.nc)
    await start_worker(function="remove-bg", max_batch=1, runners=1, intra_op_threads=1)
    photo = photos["astronaut"].read_bytes()
    ids = [await client.submit(photo, reply_to=inbox) for _ in range(6)]
    running: JobView | None = None
    deadline = time.monotonic() + 60
    while running is None and time.monotonic() < deadline:
        for job_id in ids[1:]:
            view = await jobs.status(job_id)
            if view.state is JobState.RUNNING:
                running = view
                break
    assert running is not None, "no job was seen running"
    assert running.worker and running.running_since is not None
    cancelled = await jobs.cancel(running.job_id)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.worker == running.worker and "output is dropped" in cancelled.detail
    await replies.until(ids, timeout=90)
    await asyncio.sleep(1.0)  # the cancelled job's batch has ended by now
    assert replies.count[running.job_id] == 1  # exactly one answer: cancelled, never ok
    assert replies.statuses[running.job_id] == ["cancelled"]
    assert (await jobs.status(running.job_id)).state is JobState.CANCELLED
    others = [j for j in ids if j != running.job_id]
    assert all(replies.statuses[j] == ["ok"] for j in others)


async def test_a_campaign_of_1000_queued_jobs_is_called_off_and_never_runs(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    replies, inbox = await _replies(client)
    ids = [await client.submit(png_bytes(), function="tiny", reply_to=inbox) for _ in range(1000)]
    done = await JobLifecycle(client.nc).cancel_all("tiny")
    assert done.never_ran == 1000 and done.stopped == 0 and done.already_final == 0
    await replies.until(ids, timeout=30)
    assert all(s == ["cancelled"] for s in replies.statuses.values())
    worker = await start_worker(function="tiny")
    await asyncio.sleep(1.0)
    assert worker.consumer is not None and worker.consumer.completed == 0  # work saved
    assert sum(replies.count.values()) == 1000
