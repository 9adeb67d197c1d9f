"""The worker's settings (`WorkerSettings`, every `SURGE_<NAME>` variable), and the
names every part shares, re-exported from `function.contract.names`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from function.contract.errors import SurgeError, clip
from function.contract.names import (
    ADVISORIES_STREAM,
    CALL_SUBJECT_PREFIX,
    CONSUMER_PREFIX,
    CONTROL_SUBJECT_PREFIX,
    DEAD_STREAM,
    DEAD_SUBJECT_PREFIX,
    DEFAULT_FUNCTION,
    ENV_PREFIX,
    EVENTS_SUBJECT_PREFIX,
    FUNCTIONS,
    HEARTBEAT_SUBJECT_PREFIX,
    JOBS_STREAM,
    JOBS_SUBJECT_PREFIX,
    MAX_DELIVERIES_ADVISORY_PREFIX,
    OBJECT_STORE_BUCKET,
    RESERVED_SUBJECT_PREFIXES,
    RESULTS_STREAM,
    RESULTS_SUBJECT_PREFIX,
    TENANT_INBOX_MARK,
    TENANT_STREAM_PREFIX,
    Header,
    Priority,
    call_subject,
    consumer_name,
    control_subject,
    dead_subject,
    events_subject,
    heartbeat_subject,
    is_valid_tenant,
    job_subject,
    max_deliveries_subject,
    result_subject,
    servers_from,
    sweeper_name,
    tenant_blob_bucket,
    tenant_inbox_prefix,
    tenant_of_stream,
    tenant_stream,
)
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
    screen_via: Literal["worker", "queue"] = Field(
        default="worker",
        description="Where the screen runs: 'worker', its model beside the main one; "
        "'queue', a job goes to the screen function's workers first and comes back "
        "only when it passes.",
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
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="The worker's event loop ('auto': uvloop where installed, a third "
        "less CPU per job on the message path).",
    )
    switch_interval_ms: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="How long a thread busy in Python keeps the interpreter lock from one "
        "coming back from C code (Python's own: 5): the worker's decode and encode threads "
        "wait less beside its event loop (python -m loadgen.bench.gil).",
    )
    cpu_processes: int | None = Field(
        default=None,
        ge=0,
        description="Processes that decode, preprocess and postprocess beside the worker, "
        "so that those stages use every core instead of sharing one interpreter lock "
        "(0: in the worker's threads; unset: one per usable CPU but one where there are "
        "4 or more and the model runs on a GPU or costs less than a thread hop, else "
        "threads; always threads with a screen run in the worker).",
    )
    model_rollout: bool = Field(
        default=True,
        description="Follow the function's rollout record (`surge models rollout`): serve "
        "the versions it names, swapped in without a restart.",
    )
    canary_max_error_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="A canary whose share of failed jobs exceeds the stable version's "
        "(meanwhile) by more than this is rolled back.",
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

    @field_validator("screen_via")
    @classmethod
    def _not_screened_by_itself(cls, value: str, info: ValidationInfo) -> str:
        screen, function = info.data.get("screen"), info.data.get("function")
        if value == "queue" and screen is not None and screen.function == function:
            raise ValueError(
                f"a function screened by itself through the queue ({screen}) would screen "
                "its own screen jobs for ever"
            )
        return value
