"""Surge's exceptions.

Every error a job can end with carries an `ErrorCode`, which is what the client sees::

    SurgeError
     ├── JobError            permanent: the job gets an error result and is never retried
     │    └── BadInput       the input itself is wrong (undecodable, too large, bad schema...)
     └── TransientError      may succeed later: the message is negatively acked with a delay
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "MAX_MESSAGE_CHARS",
    "BadInput",
    "ErrorCode",
    "JobError",
    "SurgeError",
    "TransientError",
    "clip",
]


class ErrorCode(StrEnum):
    """Stable error codes carried in `Result.error.code`."""

    BAD_IMAGE = "bad_image"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_FUNCTION = "unknown_function"
    INPUT_NOT_FOUND = "input_not_found"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INFERENCE_FAILED = "inference_failed"
    MAX_DELIVER_EXCEEDED = "max_deliver_exceeded"
    NOT_READY = "not_ready"
    RESULT_TOO_LARGE = "result_too_large"
    UNAUTHORIZED = "unauthorized"  # HTTP only: no valid credential
    FORBIDDEN = "forbidden"  # HTTP only: the tenant may not call this function
    QUOTA_EXCEEDED = "quota_exceeded"  # the tenant's pending, payload or rate quota
    CANCELLED = "cancelled"  # asked to stop: `surge cancel`, `DELETE /v1/jobs/{id}`
    CONTENT_REJECTED = "content_rejected"  # its screen's score (`SURGE_SCREEN`) refused it


MAX_MESSAGE_CHARS = 1024


def clip(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut): error messages never
    grow with their input."""
    out = str(text)
    return out if len(out) <= limit else out[: limit - 1] + "\u2026"


class SurgeError(Exception):
    """Base of every Surge exception."""


class JobError(SurgeError):
    """A job that cannot succeed; its result is an error with `code` and `message`.

    The message is cut to `MAX_MESSAGE_CHARS`, so an error result never grows with input.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        message = clip(message)
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whatever its subclass's constructor takes (it crosses to and from the
        worker's CPU processes)."""
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[JobError], args: tuple[Any, ...], state: dict[str, Any]) -> JobError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class BadInput(JobError):
    """The job's input is wrong: terminate the message, never retry."""


class TransientError(SurgeError):
    """A failure that may pass (e.g. GPU out of memory): retry with a delay."""
