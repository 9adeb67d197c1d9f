"""A job's life as a client follows it: its states, the ticket that records it while it
is queued, the status view, the events published as it moves, and the questions
workers answer about the jobs they hold.

    submitted -> queued -> running -> done | failed
                    \\          \\-> cancelled (its output dropped)
                     \\-> cancelled | expired (its deadline passed before it ran)

A job's results subject (`surge.results.[<tenant>.]<job id>`, one message kept) holds
its record: the ticket written at submit (`Surge-Record: ticket`), replaced by the final
result. The ticket names the stream and sequence of the job message, so a job can be
found in the work queue (queued or running) and removed from it (cancelled).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from function.contract.errors import ErrorCode
from function.contract.settings import Priority
from function.contract.webhooks import WebhookRecord
from function.contract.wire import JobStatus, Result

__all__ = [
    "TICKET",
    "ControlAsk",
    "ControlReply",
    "JobEvent",
    "JobState",
    "JobTicket",
    "JobView",
    "state_of_result",
]

TICKET = "ticket"  # the `Surge-Record` header value of a ticket


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)


def state_of_result(result: Result) -> JobState:
    """The final state a stored result means."""
    if result.status is JobStatus.OK:
        return JobState.DONE
    code = result.error.code if result.error is not None else None
    if code is ErrorCode.CANCELLED:
        return JobState.CANCELLED
    if code is ErrorCode.DEADLINE_EXCEEDED:
        return JobState.EXPIRED
    return JobState.FAILED


class JobTicket(_Wire):
    """Written at submit on the job's results subject (only where nothing is yet)."""

    job_id: str
    function: str
    priority: Priority
    tenant: str | None = None
    stream: str = Field(description="The jobs stream that holds the job message.")
    sequence: int = Field(description="Its sequence in that stream.")
    reply_to: str | None = None
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobView(_Wire):
    """What `surge status` and `GET /v1/jobs/{id}` answer."""

    job_id: str
    state: JobState
    function: str | None = None
    priority: Priority | None = None
    tenant: str | None = None
    submitted_at: datetime | None = None
    backlog: int | None = Field(
        default=None, description="Jobs of its function and priority still to be delivered."
    )
    worker: str | None = Field(default=None, description="The worker running it.")
    running_since: datetime | None = None
    result: Result | None = None
    webhook: WebhookRecord | None = Field(
        default=None, description="Its webhook delivery, when it asked for one."
    )
    detail: str = ""


class JobEvent(_Wire):
    """A state change, published on `surge.events.[<tenant>.]<job id>`."""

    job_id: str
    state: JobState
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    worker: str | None = None
    detail: str = ""


class ControlAsk(_Wire):
    """A question to every worker of a function about one job message."""

    op: str = Field(pattern="^(status|cancel)$")
    job_id: str
    stream: str
    sequence: int


class ControlReply(_Wire):
    """Sent only by the worker that holds the job."""

    job_id: str
    worker: str
    running: bool = Field(description="In a batch now (else prepared, waiting for one).")
    since: datetime | None = None
    cancelled: bool = False
