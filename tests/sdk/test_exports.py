"""The SDK's public names are pinned: a change here is a change to its API."""

from __future__ import annotations

import surge

PUBLIC = (
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
)


def test_the_public_names_are_pinned_and_importable() -> None:
    assert tuple(surge.__all__) == PUBLIC
    assert all(getattr(surge, name) is not None for name in PUBLIC)


def test_every_sdk_error_is_a_surge_error() -> None:
    errors = [
        surge.JobCancelled,
        surge.JobExpired,
        surge.JobFailed,
        surge.JobTimeout,
        surge.MissingOutput,
        surge.NatsAuthError,
        surge.NatsConnectError,
        surge.NatsUnreachable,
        surge.NotConnected,
        surge.QuotaExceeded,
    ]
    assert all(issubclass(error, surge.SurgeError) for error in errors)
    assert issubclass(surge.JobCancelled, surge.JobFailed)
    assert issubclass(surge.JobTimeout, TimeoutError) and issubclass(surge.MissingOutput, KeyError)
