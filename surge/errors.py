"""The SDK's exceptions: one tree under Surge's own `SurgeError`.

SurgeError                  (function.contract.errors: every Surge exception)
 ├── JobFailed              the job ended without success: `.job_id`, `.code`, `.result`
 │    ├── JobCancelled      it was cancelled (`Job.cancel`, `surge cancel`)
 │    └── JobExpired        its deadline passed (`deadline_exceeded`)
 ├── JobTimeout             no result within the time given (also a `TimeoutError`)
 ├── MissingOutput          a result has no such output, or not of that kind (a `KeyError`)
 ├── NotConnected           the client is closed, or its connection is gone
 ├── NatsConnectError       the first connection failed (refused credentials, bad TLS)
 │    └── NatsUnreachable   no NATS server answered in time
 ├── NatsAuthError          the credentials are unusable (a missing file, two kinds at once)
 └── QuotaExceeded          a tenant's job was refused: one of its quotas is used up
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from function.contract.errors import ErrorCode, SurgeError
from function.contract.lifecycle import JobState
from function.contract.nats_auth import NatsAuthError, NatsConnectError
from function.contract.quota import QuotaExceeded
from function.contract.wire import Result
from function.transport.connect import NatsUnreachable

if TYPE_CHECKING:
    from surge.results import JobResult

__all__ = [
    "JobCancelled",
    "JobExpired",
    "JobFailed",
    "JobTimeout",
    "MissingOutput",
    "NatsAuthError",
    "NatsConnectError",
    "NatsUnreachable",
    "NotConnected",
    "QuotaExceeded",
    "SurgeError",
]


class JobFailed(SurgeError):
    """A job ended without success; `result` is its stored result, `code` its error code."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self.job_id = result.job_id
        error = result.error
        self.code: ErrorCode | None = error.code if error is not None else None
        self.message = error.message if error is not None else "no error was given"
        super().__init__(f"job {self.job_id} {self._what()}: {self.message}")

    def _what(self) -> str:
        return f"failed: {self.code}"


class JobCancelled(JobFailed):
    """The job was cancelled before it could finish; it never produced an output."""

    def _what(self) -> str:
        return "was cancelled"


class JobExpired(JobFailed):
    """The job's deadline passed before (or while) it ran."""

    def _what(self) -> str:
        return "expired (deadline_exceeded)"


def job_failure(result: Result) -> JobFailed:
    """The exception that a non-ok `result` means."""
    code = result.error.code if result.error is not None else None
    if code is ErrorCode.CANCELLED:
        return JobCancelled(result)
    if code is ErrorCode.DEADLINE_EXCEEDED:
        return JobExpired(result)
    return JobFailed(result)


class JobTimeout(SurgeError, TimeoutError):
    """No result came within `waited_s` seconds; `state` is the job's last known state.

    Waiting for many jobs (`results`), `job_id` names the first one missing, `missing`
    all of them, and `completed` holds the results that did arrive.
    """

    def __init__(
        self,
        job_id: str | None,
        waited_s: float,
        state: JobState,
        *,
        missing: Sequence[str] = (),
        completed: Sequence[JobResult] = (),
    ) -> None:
        self.job_id = job_id
        self.waited_s = waited_s
        self.state = state
        self.missing = tuple(missing) or ((job_id,) if job_id else ())
        self.completed = list(completed)
        which = f"job {job_id}" if job_id else "the job"
        if len(self.missing) > 1:
            which = f"{len(self.missing)} jobs (first: {job_id})"
        super().__init__(
            f"no result for {which} after {waited_s:g} s; last known state: {state.value}"
        )


class MissingOutput(SurgeError, KeyError):
    """A result has no output of that name, or not of the kind asked for."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class NotConnected(SurgeError):
    """The client is closed, or its NATS connection is gone for good."""
