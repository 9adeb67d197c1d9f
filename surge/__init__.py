"""Surge's Python SDK: submit images, follow jobs, get typed results; sync or async.

    from surge import Surge

    with Surge() as surge:                        # $SURGE_NATS_URL or nats://127.0.0.1:4222
        job = surge.submit("photo.jpg")           # queued; job.id names it
        job.status().state                        # JobState.QUEUED, RUNNING, DONE...
        job.wait(timeout=60).mask.save("mask.png")

    async with AsyncSurge(creds="user.creds") as surge:  # the same, with `await`
        result = await (await surge.submit(image)).wait()

aio       `AsyncSurge`, `AsyncJob`: the async face
sync      `Surge`, `Job`: the same API, blocking (one private event loop in a thread)
results   `JobResult`: state, error, outputs as PIL images, bytes or scores
errors    the exception tree: `JobFailed`, `JobCancelled`, `JobTimeout`, `NotConnected`...
"""

from __future__ import annotations

from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobState, JobView
from function.contract.nats_auth import NatsAuth
from function.contract.settings import Priority
from surge.aio import DEFAULT_URL, AsyncJob, AsyncSurge
from surge.errors import (
    JobCancelled,
    JobExpired,
    JobFailed,
    JobTimeout,
    MissingOutput,
    NatsAuthError,
    NatsConnectError,
    NatsUnreachable,
    NotConnected,
    QuotaExceeded,
    SurgeError,
)
from surge.results import JobResult
from surge.sync import Job, Surge

__all__ = [
    "DEFAULT_URL",
    "AsyncJob",
    "AsyncSurge",
    "ErrorCode",
    "Job",
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobResult",
    "JobState",
    "JobTimeout",
    "JobView",
    "MissingOutput",
    "NatsAuth",
    "NatsAuthError",
    "NatsConnectError",
    "NatsUnreachable",
    "NotConnected",
    "Priority",
    "QuotaExceeded",
    "Surge",
    "SurgeError",
]
