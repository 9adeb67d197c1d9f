"""Wire formats: the job envelopes Surge accepts and the results, errors and dead letters it sends.

Every model tolerates unknown fields, so older and newer peers can talk. How bytes
become a `JobRequest` lives in `function.contract.parse`.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from function.contract.bounds import (
    MAX_CONTENT_TYPE_CHARS,
    MAX_OUTPUT_NAME_CHARS,
    MAX_OUTPUTS,
)
from function.contract.errors import MAX_MESSAGE_CHARS, ErrorCode, clip
from function.contract.settings import Priority

__all__ = [
    "SUPPORTED_IMAGE_TYPES",
    "CloudEvent",
    "DeadLetter",
    "ErrorInfo",
    "ImageOutput",
    "JobEnvelope",
    "JobRequest",
    "JobStatus",
    "ModelInfo",
    "Output",
    "Result",
    "ScoresOutput",
    "Timings",
    "as_utc",
]

SUPPORTED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


class _Wire(BaseModel):
    """Base for wire models: unknown fields are tolerated, never fatal."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class JobStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class ErrorInfo(_Wire):
    code: ErrorCode
    message: Annotated[str, AfterValidator(clip)] = Field(
        description=f"Human-readable cause, at most {MAX_MESSAGE_CHARS} characters."
    )


class ModelInfo(_Wire):
    name: str
    version: str = Field(description="Content hash of the model file (first 16 hex of sha256).")
    providers: list[str] = Field(default_factory=list)


class Timings(_Wire):
    """Where a job's time went, in milliseconds."""

    queued_ms: float = 0.0
    batch_size: int = 0
    inference_ms: float = 0.0
    total_ms: float = 0.0
    cache_hit: bool = Field(
        default=False, description="Answered from the result cache, without inference."
    )
    compute_ms: float = Field(
        default=0.0,
        description="Its share of its batch's inference plus its own decode, preprocess "
        "and postprocess time.",
    )


class ImageOutput(_Wire):
    """An image output, inline (base64) or by Object Store reference when large."""

    kind: Literal["image"] = "image"
    content_type: str = "image/png"
    width: int
    height: int
    data: str | None = Field(default=None, description="Base64 of the encoded image.")
    ref: str | None = Field(default=None, description="Object name in the surge-blobs bucket.")

    def payload(self) -> bytes:
        """The encoded image bytes when inline; raise if only a reference is held."""
        if self.data is None:
            raise ValueError(f"output is stored by reference: {self.ref}")
        return base64.b64decode(self.data)


class ScoresOutput(_Wire):
    kind: Literal["scores"] = "scores"
    scores: dict[str, float]


Output = Annotated[ImageOutput | ScoresOutput, Field(discriminator="kind")]


class Result(_Wire):
    """The one final result of a job, published to its reply subject and stored."""

    job_id: str
    status: JobStatus
    function: str
    tenant: str | None = Field(default=None, description="The tenant whose job this was.")
    error: ErrorInfo | None = None
    outputs: dict[str, Output] = Field(default_factory=dict)
    model: ModelInfo | None = None
    timings: Timings = Field(default_factory=Timings)
    trace_id: str | None = None
    attempts: int = 1
    finished_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    input_sha256: str | None = Field(
        default=None,
        description="On a screen job's result (`Surge-Screen-For`): the sha256 of the input "
        "it scored, which the screened job's worker checks against its own.",
    )


def as_utc(value: datetime) -> datetime:
    """A time without a zone (a deadline, a server timestamp) is taken as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


Deadline = Annotated[datetime | None, AfterValidator(_as_utc_or_none)]


Str64 = Annotated[str, StringConstraints(max_length=64)]
Str256 = Annotated[str, StringConstraints(max_length=256)]
Str1024 = Annotated[str, StringConstraints(max_length=1024)]
ContentType = Annotated[str, StringConstraints(max_length=MAX_CONTENT_TYPE_CHARS)]

OutputName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_OUTPUT_NAME_CHARS)]


class JobEnvelope(_Wire):
    """JSON job: inline base64 image, or a reference to an object in the surge-blobs bucket."""

    job_id: Str256 | None = None
    function: Str64 | None = None
    image: str | None = Field(default=None, description="Base64-encoded image bytes.")
    image_ref: Str1024 | None = Field(default=None, description="Object name in surge-blobs.")
    content_type: ContentType | None = None
    outputs: list[OutputName] | None = Field(default=None, max_length=MAX_OUTPUTS)
    reply_to: Str1024 | None = None
    deadline: Deadline = None


class CloudEvent(_Wire):
    """CloudEvents 1.0 structured-mode event; `data` may be a `JobEnvelope` or base64 bytes."""

    specversion: Literal["1.0"]
    id: Str256
    source: Str1024
    type: Str1024
    datacontenttype: ContentType | None = None
    subject: Str1024 | None = None
    time: datetime | None = None
    data: Any = None
    data_base64: str | None = None


class DeadLetter(_Wire):
    """What lands on `surge.dead.<function>` after `max_deliver` attempts."""

    job_id: str
    function: str
    tenant: str | None = None
    original_subject: str
    attempts: int
    last_error: ErrorInfo
    stream_sequence: int | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    payload_b64: str = ""
    payload_bytes: int = Field(default=0, description="Size of the original payload.")
    payload_dropped: bool = Field(
        default=False, description="The payload did not fit the server's max_payload."
    )


class JobRequest(BaseModel):
    """A parsed job: everything the worker needs, with the input still encoded."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    job_id: str
    function: str
    priority: Priority
    tenant: str | None = None
    reply_to: str | None = None
    deadline: Deadline = None
    outputs: tuple[str, ...] = ()
    content_type: str | None = None
    image: bytes | None = None
    image_ref: str | None = None
    webhook: str | None = None  # where its result is POSTed, signed (`Surge-Webhook`)
