"""Logs, metrics and traces.

* Logs: one line per record on stderr, with `job_id`, `trace_id`, `function`,
  `model_version` and `tenant` (an authenticated HTTP caller) where they have a value
  (from the record's `extra` or the current context): JSON objects in a container (stderr
  not a terminal), readable `time level logger: message key=value` lines on a terminal;
  `SURGE_LOG_FORMAT=json|text` chooses.
* Metrics: Prometheus collectors in the default registry (`METRICS`).
* Traces: OpenTelemetry; the W3C `traceparent` travels in NATS headers. Spans are
  exported over OTLP/HTTP when an endpoint is configured, and dropped otherwise.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "LOG_FORMAT_ENV",
    "METRICS",
    "JsonFormatter",
    "LogFormat",
    "Metrics",
    "TextFormatter",
    "bind",
    "configure_logging",
    "configure_tracing",
    "context_from_headers",
    "current_trace_id",
    "log_format",
    "set_process_fields",
    "tenant_label",
    "trace_headers",
    "trace_id_in",
    "trace_id_of",
    "tracer",
]

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "surge_log", default=None
)
_FIELDS = ("job_id", "trace_id", "function", "model_version", "tenant")


_process_fields: dict[str, str] = {}


def set_process_fields(**fields: str | None) -> None:
    """Fields on every log line of this process (e.g. function, model_version)."""
    _process_fields.update({k: v for k, v in fields.items() if v})


@contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add fields (e.g. job_id) to every log line inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def trace_id_of(span: trace.Span) -> str | None:
    """A span's trace id as 32 hex digits (as in `traceparent`), or None."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def trace_id_in(headers: Mapping[str, str] | None) -> str | None:
    """The trace id a publisher put in a message's `traceparent` header, or None."""
    return trace_id_of(trace.get_current_span(context_from_headers(headers)))


def current_trace_id() -> str | None:
    """Hex trace id of the current span, if one is recording."""
    return trace_id_of(trace.get_current_span())


def _fields(record: logging.LogRecord) -> dict[str, str]:
    """The record's context fields that have a value (from `extra`, `bind` or the process)."""
    bound = {**_process_fields, **(_context.get() or {})}
    found = {}
    for field in _FIELDS:
        value = getattr(record, field, None) or bound.get(field)
        if field == "trace_id" and not value:
            value = current_trace_id()
        if value:
            found[field] = str(value)
    return found


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; fields without a value are left out."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """One readable line for a terminal: local time, level, logger, message, then the
    fields that have a value as `key=value` (a traceback, if any, on the lines below)."""

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        fields = "".join(f" {key}={value}" for key, value in _fields(record).items())
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += f"{record.getMessage()}{fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


LogFormat = Literal["json", "text"]
LOG_FORMAT_ENV = "SURGE_LOG_FORMAT"


def log_format(stream: Any) -> tuple[LogFormat, str | None]:
    """`SURGE_LOG_FORMAT` (json or text), else text on a terminal and JSON elsewhere (a
    container, a file, a pipe); with a complaint when the variable names neither."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if chosen == "json":
        return "json", None
    if chosen == "text":
        return "text", None
    isatty = getattr(stream, "isatty", None)
    auto: LogFormat = "text" if callable(isatty) and isatty() else "json"
    if not chosen:
        return auto, None
    return auto, f"{LOG_FORMAT_ENV}={chosen[:16]!r} is neither json nor text; using {auto}"


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route the `surge` loggers to stderr (idempotent): readable lines on a terminal,
    JSON lines otherwise, or as `SURGE_LOG_FORMAT` says."""
    stream = stream or sys.stderr
    root = logging.getLogger("surge")
    root.setLevel(level.upper())
    root.propagate = False
    for handler in list(root.handlers):
        if getattr(handler, "_surge", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    chosen, complaint = log_format(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler._surge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if complaint is not None:
        root.warning("%s", complaint)


def configure_tracing(
    service_name: str, otlp_endpoint: str | None = None, processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install a tracer provider; export over OTLP/HTTP only when an endpoint is given.

    With nowhere to export to, spans are not recorded (a span costs about 20 us to
    record, a job makes five): trace ids are still made, carried in headers and logged.
    """
    exporting = processor is not None or bool(otlp_endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=None if exporting else ALWAYS_OFF,  # None: OTEL_TRACES_SAMPLER or parent-based
    )
    if processor is not None:
        provider.add_span_processor(processor)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("surge")


def trace_headers(context: Context | None = None) -> dict[str, str]:
    """`traceparent` (and `tracestate`) for the current span (or the span of `context`),
    to put in NATS headers."""
    carrier: dict[str, str] = {}
    inject(carrier, context=context)
    return carrier


def context_from_headers(headers: Mapping[str, str] | None) -> Any:
    """The OpenTelemetry context a publisher put in the message headers."""
    return extract(dict(headers or {}))


class Metrics:
    """Prometheus collectors for the worker (Prometheus naming conventions)."""

    def __init__(self) -> None:
        self.jobs = Counter(
            "surge_jobs_total",
            "Jobs finished, by status and error code.",
            ["function", "status", "code"],
        )
        self.queue_wait = Histogram(
            "surge_job_queue_wait_seconds",
            "Time from publish to the start of inference.",
            ["function"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.batch_size = Histogram(
            "surge_batch_size",
            "Jobs per inference batch.",
            ["function"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.inference = Histogram(
            "surge_inference_seconds",
            "Model run time per batch.",
            ["function"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.latency = Histogram(
            "surge_job_latency_seconds",
            "Publish to result, per job.",
            ["function"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.in_flight = Gauge(
            "surge_jobs_in_flight", "Jobs taken from NATS and not yet acked.", ["function"]
        )
        self.redeliveries = Counter(
            "surge_redeliveries_total", "Jobs seen again after a failure.", ["function"]
        )
        self.dead_letters = Counter(
            "surge_dead_letters_total", "Jobs moved to the dead-letter stream.", ["function"]
        )
        self.cold_start = Gauge(
            "surge_cold_start_phase_seconds",
            "Cold-start phases: import, connect, fetch, prepare, session, warmup, hooks, "
            "screen, attach, total, first_job.",
            ["function", "phase"],
        )
        self.ready = Gauge("surge_ready", "1 when the worker is warm and consuming.", ["function"])
        self.model_share = Gauge(
            "surge_model_share",
            "Share of jobs each model version serving runs (rollouts: stable and canary).",
            ["function", "version", "role"],
        )
        self.tuned = Gauge(
            "surge_worker_setting",
            "What the worker chose: runners, intra_op_threads, max_batch, cpus, cpu_processes.",
            ["function", "setting"],
        )
        self.reply_failures = Counter(
            "surge_reply_failures_total",
            "Results stored but not delivered to their reply subject.",
            ["function"],
        )
        self.oversized = Counter(
            "surge_oversized_total",
            "Results or dead letters shrunk to fit the server's max_payload, by kind.",
            ["function", "kind"],
        )
        self.tenant_jobs = Counter(
            "surge_tenant_jobs_total",
            "Jobs finished per tenant (SURGE_TENANTS by name, others 'other', open 'none').",
            ["function", "tenant", "status"],
        )
        self.tenant_compute = Counter(
            "surge_tenant_compute_seconds_total",
            "Model (GPU) seconds per tenant: each batch's run time shared among its jobs.",
            ["function", "tenant"],
        )
        self.idle_warm = Counter(
            "surge_idle_warm_seconds_total",
            "Seconds the worker was ready with no batch running (warm but idle).",
            ["function"],
        )
        self.cold_start_total = Counter(
            "surge_cold_start_seconds_total",
            "Start-to-ready seconds, added once per worker start.",
            ["function"],
        )
        self.screened = Counter(
            "surge_screened_total",
            "Jobs run through the function's screen (SURGE_SCREEN), by outcome: passed, rejected.",
            ["function", "outcome"],
        )
        self.topology_recreated = Counter(
            "surge_topology_recreated_total",
            "Times the worker recreated streams or consumers the server had lost.",
            ["function"],
        )


METRICS = Metrics()


def tenant_label(tenant: str | None, known: Collection[str]) -> str:
    """A bounded metric label: a configured tenant's id, else `other`; `none` for open jobs."""
    if tenant is None:
        return "none"
    return tenant if tenant in known else "other"
