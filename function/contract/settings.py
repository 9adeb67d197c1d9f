"""Names shared by every part of Surge, and the worker's settings.

This module is the one source of truth for stream, consumer, subject, header and
environment-variable names. The scaler, the load generator and the manifests (checked
by a test) all import or mirror these values; nothing else spells them out.

Subjects::

    surge.jobs.<priority>.<function>   jobs, on stream SURGE_JOBS (WorkQueue retention)
    surge.jobs.<priority>.<function>.<tenant>
                                       a tenant's jobs, on the tenant's own stream
                                       SURGE_TENANT_<tenant> (its quotas, its dedupe
                                       window); the server's permissions let a tenant's
                                       user publish only with its own token
    surge.results.<job id>             results, on stream SURGE_RESULTS (one per job id)
    surge.results.<tenant>.<job id>    a tenant's results (only it may read them)
    _INBOX_<tenant>.>                  a tenant's replies (its clients' inbox prefix)
    surge.dead.<function>              dead letters, on stream SURGE_DEAD
    surge.heartbeat.<function>         worker state (core NATS, not stored)
    $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<jobs stream>.<consumer>
                                       captured on stream SURGE_ADVISORIES, so a job
                                       whose every delivery died is dead-lettered even
                                       when no worker was running at that moment
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from function.contract.errors import SurgeError, clip
from function.contract.screen import Screen

__all__ = [
    "ADVISORIES_STREAM",
    "CALL_SUBJECT_PREFIX",
    "CONSUMER_PREFIX",
    "CONTROL_SUBJECT_PREFIX",
    "DEAD_STREAM",
    "DEAD_SUBJECT_PREFIX",
    "DEFAULT_FUNCTION",
    "ENV_PREFIX",
    "EVENTS_SUBJECT_PREFIX",
    "FUNCTIONS",
    "HEARTBEAT_SUBJECT_PREFIX",
    "JOBS_STREAM",
    "JOBS_SUBJECT_PREFIX",
    "MAX_DELIVERIES_ADVISORY_PREFIX",
    "OBJECT_STORE_BUCKET",
    "RESERVED_SUBJECT_PREFIXES",
    "RESULTS_STREAM",
    "RESULTS_SUBJECT_PREFIX",
    "TENANT_INBOX_MARK",
    "TENANT_STREAM_PREFIX",
    "Header",
    "InvalidSettings",
    "Priority",
    "SurgeSettings",
    "WorkerSettings",
    "call_subject",
    "consumer_name",
    "control_subject",
    "dead_subject",
    "events_subject",
    "heartbeat_subject",
    "is_valid_tenant",
    "job_subject",
    "max_deliveries_subject",
    "result_subject",
    "servers_from",
    "sweeper_name",
    "tenant_blob_bucket",
    "tenant_inbox_prefix",
    "tenant_of_stream",
    "tenant_stream",
]

ENV_PREFIX = "SURGE_"

JOBS_STREAM = "SURGE_JOBS"
TENANT_STREAM_PREFIX = "SURGE_TENANT_"
JOBS_SUBJECT_PREFIX = "surge.jobs"
RESULTS_STREAM = "SURGE_RESULTS"
RESULTS_SUBJECT_PREFIX = "surge.results"
DEAD_STREAM = "SURGE_DEAD"
ADVISORIES_STREAM = "SURGE_ADVISORIES"
MAX_DELIVERIES_ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
DEAD_SUBJECT_PREFIX = "surge.dead"
HEARTBEAT_SUBJECT_PREFIX = "surge.heartbeat"
CALL_SUBJECT_PREFIX = "surge.call"  # request/reply for NATS users: `nats req surge.call.<fn>`
CONTROL_SUBJECT_PREFIX = "surge.control"  # asks every worker of a function about a job
EVENTS_SUBJECT_PREFIX = "surge.events"  # a job's state changes, for whoever watches
OBJECT_STORE_BUCKET = "surge-blobs"
CONSUMER_PREFIX = "surge"
# Subjects a job may never name as its reply subject: Surge's own streams and heartbeats.
RESERVED_SUBJECT_PREFIXES = tuple(
    f"{prefix}."
    for prefix in (
        JOBS_SUBJECT_PREFIX,
        RESULTS_SUBJECT_PREFIX,
        DEAD_SUBJECT_PREFIX,
        HEARTBEAT_SUBJECT_PREFIX,
        CALL_SUBJECT_PREFIX,
        CONTROL_SUBJECT_PREFIX,
        EVENTS_SUBJECT_PREFIX,
    )
)

DEFAULT_FUNCTION = "remove-bg"
FUNCTIONS = ("remove-bg", "nsfw", "tiny")


class Priority(StrEnum):
    """Job priority: a worker always fetches `high` before `normal`."""

    HIGH = "high"
    NORMAL = "normal"


class Header:
    """NATS header names Surge reads or writes."""

    MSG_ID = "Nats-Msg-Id"
    CONTENT_TYPE = "Content-Type"
    REPLY_TO = "Surge-Reply-To"
    DEADLINE = "Surge-Deadline"
    OUTPUTS = "Surge-Outputs"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    JOB_ID = "Surge-Job-Id"
    STATUS = "Surge-Status"
    ERROR_CODE = "Surge-Error-Code"
    LAST_ERROR = "Surge-Last-Error"
    ATTEMPTS = "Surge-Attempts"
    ORIGINAL_SUBJECT = "Surge-Original-Subject"
    CE_SPECVERSION = "ce-specversion"
    RECORD = "Surge-Record"  # on a results subject: "ticket" (queued) or absent (a result)
    RETRY_OF = "Surge-Retry-Of"  # on a retried job: the id of the first job it retries
    WEBHOOK = "Surge-Webhook"  # on a job: the URL its result is POSTed to, signed
    SIGNATURE = "Surge-Signature"  # on a webhook delivery: t=<unix seconds>,v1=<hex HMAC>
    DELIVERY = "Surge-Delivery"  # on a webhook delivery: its id (the same on each attempt)
    ATTEMPT = "Surge-Attempt"  # on a webhook delivery: 1, 2, ...


_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def is_valid_tenant(tenant: str) -> bool:
    """A tenant id: one subject token of lower-case letters, digits, `-` and `_`."""
    return bool(_TENANT.match(tenant))


def call_subject(function: str) -> str:
    """Where a NATS request for `function` goes: its reply is the job's result."""
    return f"{CALL_SUBJECT_PREFIX}.{function}"


def job_subject(priority: Priority | str, function: str, tenant: str | None = None) -> str:
    """The subject a client publishes a job to (a tenant's, with its token last)."""
    base = f"{JOBS_SUBJECT_PREFIX}.{Priority(priority).value}.{function}"
    return f"{base}.{tenant}" if tenant else base


def _per_job(prefix: str, job_id: str, tenant: str | None) -> str:
    """`<prefix>.<job id>`, or a tenant's `<prefix>.<tenant>.<job id>`."""
    return f"{prefix}.{tenant}.{job_id}" if tenant else f"{prefix}.{job_id}"


def result_subject(job_id: str, tenant: str | None = None) -> str:
    """The results-stream subject that holds a job's final result."""
    return _per_job(RESULTS_SUBJECT_PREFIX, job_id, tenant)


def control_subject(function: str, tenant: str | None = None) -> str:
    """Where a job's status and cancel questions reach every worker of `function`."""
    base = f"{CONTROL_SUBJECT_PREFIX}.{function}"
    return f"{base}.{tenant}" if tenant else base


def events_subject(job_id: str, tenant: str | None = None) -> str:
    """Where a job's state changes are published (core NATS: watch it, nothing is kept)."""
    return _per_job(EVENTS_SUBJECT_PREFIX, job_id, tenant)


TENANT_INBOX_MARK = "_INBOX_"


def tenant_inbox_prefix(tenant: str) -> str:
    """The inbox prefix of a tenant's clients: the only replies the worker sends it."""
    return f"{TENANT_INBOX_MARK}{tenant}"


def dead_subject(function: str) -> str:
    """The dead-letter subject for a function's jobs."""
    return f"{DEAD_SUBJECT_PREFIX}.{function}"


def heartbeat_subject(function: str) -> str:
    """The subject workers of a function publish their state on."""
    return f"{HEARTBEAT_SUBJECT_PREFIX}.{function}"


def max_deliveries_subject(consumer: str, stream: str = JOBS_STREAM) -> str:
    """JetStream's advisory subject for a job consumer's messages that hit `max_deliver`."""
    return f"{MAX_DELIVERIES_ADVISORY_PREFIX}.{stream}.{consumer}"


def tenant_blob_bucket(tenant: str) -> str:
    """The Object Store bucket a tenant uploads large inputs to (only it and workers may)."""
    return f"{OBJECT_STORE_BUCKET}-{tenant}"


def tenant_stream(tenant: str) -> str:
    """The stream that holds one tenant's jobs (its quotas and de-duplication are its own)."""
    return f"{TENANT_STREAM_PREFIX}{tenant}"


def tenant_of_stream(stream: str) -> str | None:
    """The tenant whose jobs `stream` holds, or None for any other stream."""
    if not stream.startswith(TENANT_STREAM_PREFIX):
        return None
    tenant = stream[len(TENANT_STREAM_PREFIX) :]
    return tenant if is_valid_tenant(tenant) else None


def sweeper_name(function: str) -> str:
    """Durable consumer of a function's captured MAX_DELIVERIES advisories."""
    return f"{CONSUMER_PREFIX}-{function}-sweeper"


def servers_from(url: str) -> list[str]:
    """The server list for `nats.connect` from a URL or a comma-separated list of URLs."""
    return [part.strip() for part in url.split(",") if part.strip()]


def consumer_name(function: str, priority: Priority | str) -> str:
    """Durable pull consumer name for one function and priority (filters are disjoint)."""
    return f"{CONSUMER_PREFIX}-{function}-{Priority(priority).value}"


ProviderName = Literal["tensorrt", "cuda", "cpu"]
DEFAULT_PROVIDERS: tuple[ProviderName, ...] = ("tensorrt", "cuda", "cpu")
MAX_SHOWN_VALUE_CHARS = 40  # a bad value is quoted in the error, cut to this


class InvalidSettings(ValidationError, SurgeError):
    """Settings that do not validate, said in one line that names each variable::

        invalid settings: SURGE_PROVIDERS item 0 'rocm': Input should be 'tensorrt', ...

    Still pydantic's `ValidationError` (code that catches it keeps working) and a
    `SurgeError`, which the `surge` command prints as one line, without a traceback.
    """

    line: str

    @classmethod
    def of(cls, error: ValidationError, prefix: str) -> Self:
        """`error` restated for variables named `prefix` + field (or `prefix` alone for a
        value without fields, such as `PORT`)."""
        details = error.errors(include_url=False)
        made = cls.from_exception_data(error.title, [_init_details(d) for d in details])
        made.line = "invalid settings: " + "; ".join(_problem(d, prefix) for d in details)
        return made

    def __str__(self) -> str:
        return self.line


def _init_details(detail: ErrorDetails) -> InitErrorDetails:
    """An error as `from_exception_data` takes it, its message kept word for word."""
    return {
        "type": PydanticCustomError(detail["type"], detail["msg"]),
        "loc": detail["loc"],
        "input": detail["input"],
    }


def _problem(detail: ErrorDetails, prefix: str) -> str:
    field, *rest = detail["loc"] or ("",)
    name = f"{prefix}{str(field).upper()}" + "".join(f" item {part}" for part in rest)
    value = detail["input"]
    shown = "" if isinstance(value, dict) else f" {clip(repr(value), MAX_SHOWN_VALUE_CHARS)}"
    return f"{name}{shown}: {detail['msg']}"


def _parse_list(value: object) -> object:
    """A list setting from text: a JSON list (`["cuda","cpu"]`) or comma-separated
    (`cuda,cpu`); empty text is an empty list. Anything else passes through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError('not a JSON list; write it as ["a","b"] or a,b') from None
    return [part.strip() for part in text.split(",") if part.strip()]


class SurgeSettings(BaseSettings):
    """Base of Surge's settings classes: a bad value raises `InvalidSettings` (one line
    naming the variable), and `from_mapping` reads a given environment (what Knative
    Functions' `start(cfg)` passes)."""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSettings.of(exc, type(self)._prefix()) from None

    @classmethod
    def _prefix(cls) -> str:
        return cls.model_config.get("env_prefix") or ""

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Self:
        """The settings that the variables in `env` starting with the prefix give (any
        case); they win over the process environment, which fills in the rest as usual."""
        prefix = cls._prefix().upper()
        fields = {
            k[len(prefix) :].lower(): v for k, v in env.items() if k.upper().startswith(prefix)
        }
        return cls(**{name: value for name, value in fields.items() if name in cls.model_fields})


class WorkerSettings(SurgeSettings):
    """Everything a worker process can be configured with; env vars are `SURGE_<NAME>`.

    List settings take a JSON list or a comma-separated list: `SURGE_PROVIDERS=cuda,cpu`
    and `SURGE_PROVIDERS='["cuda","cpu"]'` are the same.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    tenants: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Tenants named in metrics; any other is 'other'."
    )
    connect_wait_s: float = Field(
        default=float("inf"),
        gt=0,
        description="How long a worker's first connection waits for NATS to answer "
        "(retrying with backoff, one log line an attempt; inf: until it does).",
    )
    function: str = DEFAULT_FUNCTION
    model_dir: Path = Field(default=Path(".cache/surge/models"))
    model_path: Path | None = None
    task: str | None = Field(
        default=None, description="'module:factory' for a custom task (pre/post-processing)."
    )
    providers: Annotated[list[ProviderName], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS)
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="Threads per inference run (0: from the CPU quota)."
    )
    runners: int = Field(
        default=0,
        ge=0,
        description="Inference runs at once on the one shared session (0: one per usable "
        "CPU on a CPU, two on a GPU).",
    )
    max_batch: int = Field(default=8, ge=1)
    max_batch_wait_ms: float = Field(default=5.0, ge=0)
    warmup_batch_sizes: Annotated[list[int] | None, NoDecode] = None
    warmup_dir: Path | None = Field(default=None, description="Images to run once before ready.")
    warmup_hooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="'module:callable' hooks."
    )
    ack_wait_s: float = Field(default=60.0, gt=0)
    max_deliver: int = Field(default=5, ge=1)
    max_ack_pending: int = Field(default=256, ge=1)
    nak_delay_s: float = Field(default=2.0, ge=0)
    fetch_timeout_s: float = Field(default=1.0, gt=0)
    max_payload_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    pixel_budget: int = Field(
        default=0,
        ge=0,
        description="Decoded pixels (4 bytes each) a worker's jobs may hold at once; a job "
        "larger than this runs alone (0: 4 x max_batch x 4 megapixels; see README 'Memory').",
    )
    inline_output_limit: int = Field(default=768 * 1024, ge=0)
    results_max_age_s: float = Field(default=24 * 3600.0, gt=0)
    cache: bool = Field(
        default=False,
        description="Answer an input already done (same bytes, outputs and model version, "
        "same tenant) from its stored result, without inference.",
    )
    cache_max_age_s: float = Field(
        default=3600.0, gt=0, description="A cache entry expires after this long."
    )
    cache_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Size of the cache bucket; oldest go first."
    )
    screen: Annotated[Screen | None, NoDecode] = Field(
        default=None,
        description="A function run on each job's image first, e.g. 'nsfw:nsfw>0.8': a job "
        "whose score meets the rule is answered content_rejected, never reaching the model.",
    )
    dedupe_window_s: float = Field(default=120.0, gt=0)
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas.")
    jobs_max_age_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="A job still queued after this expires."
    )
    orphan_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="A job for a function no consumer serves is answered "
        "unknown_function after this long.",
    )
    liveness_grace_s: float = Field(
        default=30.0, gt=0, description="Readiness fails at once; liveness after this grace."
    )
    blob_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    job_events: bool = Field(
        default=True,
        description="Publish each job's state changes on surge.events.[<tenant>.]<job id>.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Master secret of webhook signatures (each tenant's is derived from it); "
        "without it, jobs that ask for a webhook are refused.",
    )
    webhook_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts webhooks may go to (empty: any but internal addresses).",
    )
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="POSTs per delivery.")
    webhook_backoff_s: float = Field(
        default=1.0, ge=0, description="Wait before the second POST; doubled after each."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="For one POST.")
    model_rollout: bool = Field(
        default=True,
        description="Follow the function's rollout record (`surge models rollout`): serve "
        "the versions it names, swapped in without a restart.",
    )
    canary_max_error_rate: float = Field(
        default=0.2, ge=0, le=1, description="A canary failing more jobs than this is rolled back."
    )
    canary_min_jobs: int = Field(
        default=20, ge=1, description="Canary jobs seen before its error rate is judged."
    )
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    log_level: str = "INFO"
    otlp_endpoint: str | None = None

    @field_validator(
        "tenants",
        "providers",
        "warmup_batch_sizes",
        "warmup_hooks",
        "webhook_allow_hosts",
        mode="before",
    )
    @classmethod
    def _text_list(cls, value: object) -> object:
        return _parse_list(value)

    @field_validator("screen", mode="before")
    @classmethod
    def _screen_text(cls, value: object) -> object:
        if isinstance(value, str):
            return Screen.parse(value) if value.strip() else None
        return value
