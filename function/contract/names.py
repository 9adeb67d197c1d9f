"""Names shared by every part of Surge: streams, consumers, subjects, headers.

This module (re-exported by `function.contract.settings`) is the one source of truth
for stream, consumer, subject, header and environment-variable names. The scaler, the
load generator and the manifests (checked by a test) all import or mirror these values;
nothing else spells them out.

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

import re
from enum import StrEnum

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
    "Priority",
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
    SCREEN_FOR = "Surge-Screen-For"  # on a screen job (SURGE_SCREEN_VIA=queue): for whom


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
