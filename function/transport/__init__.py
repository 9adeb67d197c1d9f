"""JetStream I/O: everything the worker says to NATS, below the job path.

topology    streams, consumers and the blob bucket, created idempotently
connect     opening a connection: credentials, TLS, a first try that fails clearly
pull        one continuous pull request per consumer (`PullFeed`)
storage     results stored by job id, replies, dead letters, blobs (`ResultStore`)
inbox       results pushed to a client's reply subject, the store as fallback (`ResultInbox`)
records     a job's record on its results subject: the ticket, then the final result
lifecycle   status, cancel and cancel-all of jobs (`JobLifecycle`)
deadletters  the dead-letter stream: list, find, retry (a new job id) and remove letters
events      a job's state changes on surge.events.<job id>, best effort (`JobEvents`)
webhooks    a job's result POSTed, signed, to its webhook; each attempt recorded (`WebhookSender`)
cache       the opt-in result cache: inputs done before answered from their result (`ResultCache`)
acks        writes to JetStream whose acknowledgements are awaited together (`StreamWrites`)
calls       `nats req surge.call.<function>`: a request stored as a job, answered by its result
heartbeat   the heartbeat publisher
connection  what nats-py's callbacks say about the connection (`ConnectionHealth`)
poison      dead-letters jobs whose every worker died (MAX_DELIVERIES advisories)
orphans     answers jobs for functions nobody serves
recovery    recreates streams and consumers a server lost, follows tenants (`TopologyWatch`)
tenants     each tenant's jobs stream: its quotas, its consumers (`add_tenant`, `list_tenants`)
periodic    background loops, and stopping a task for sure (`end_task`)
modelstore  model files and rollout records: push, read, compare-and-set, watch (`ModelStore`)
"""

from __future__ import annotations

from function.transport.acks import (
    DuplicateWrite,
    StreamWrites,
)
from function.transport.cache import (
    CACHE_BUCKET,
    CacheEntry,
    ResultCache,
    cache_key,
)
from function.transport.calls import (
    CALL_HEADERS,
    CallGateway,
)
from function.transport.connect import (
    CONNECT_WAIT_ENV,
    NatsUnreachable,
    connect_options,
    connect_wait_s,
    open_nats,
    tls_context,
)
from function.transport.connection import (
    ConnectionHealth,
    Trouble,
)
from function.transport.deadletters import (
    DeadEntry,
    DeadLetters,
    NotRetryable,
    Resubmit,
    first_job_id,
    payload_of,
    retried_as,
    retry_headers,
    retry_ids,
)
from function.transport.events import (
    JobEvents,
)
from function.transport.heartbeat import (
    HeartbeatPublisher,
)
from function.transport.inbox import (
    ResultInbox,
    StoredLookup,
)
from function.transport.lifecycle import (
    CampaignCancelled,
    JobLifecycle,
)
from function.transport.orphans import (
    OrphanSweeper,
    subject_matches,
)
from function.transport.periodic import (
    Periodic,
    end_task,
)
from function.transport.poison import (
    PoisonSweeper,
)
from function.transport.pull import (
    PullFeed,
)
from function.transport.records import (
    NO_MESSAGE_FOUND,
    PAST_THE_END,
    WRONG_LAST_SEQUENCE,
    Record,
    delete_message,
    expect_last,
    read_record,
    write_ticket,
)
from function.transport.recovery import (
    TenantConsumers,
    TopologyWatch,
)
from function.transport.storage import (
    EncodedResult,
    ResultStore,
    encode_result,
    fetch_result,
)
from function.transport.tenants import (
    TenantError,
    add_tenant,
    ensure_tenant_blobs,
    ensure_tenant_consumers,
    list_tenants,
    quota_of,
    remove_tenant,
    tenant_stream_config,
)
from function.transport.topology import (
    Topology,
    TopologyMismatch,
    consumer_config,
    consumer_filters,
    ensure_blob_store,
    ensure_consumers,
    ensure_streams,
    ensure_topology,
    job_filters,
    jobs_subjects,
    jobs_waiting,
    missing_topology,
    stream_configs,
    sweeper_config,
    upgrade_consumer,
)
from function.transport.webhooks import (
    OutboxEntry,
    WebhookSender,
    open_webhooks_bucket,
    outbox_key,
    read_webhook,
)

__all__ = [
    "CACHE_BUCKET",
    "CALL_HEADERS",
    "CONNECT_WAIT_ENV",
    "NO_MESSAGE_FOUND",
    "PAST_THE_END",
    "WRONG_LAST_SEQUENCE",
    "CacheEntry",
    "CallGateway",
    "CampaignCancelled",
    "ConnectionHealth",
    "DeadEntry",
    "DeadLetters",
    "DuplicateWrite",
    "EncodedResult",
    "HeartbeatPublisher",
    "JobEvents",
    "JobLifecycle",
    "NatsUnreachable",
    "NotRetryable",
    "OrphanSweeper",
    "OutboxEntry",
    "Periodic",
    "PoisonSweeper",
    "PullFeed",
    "Record",
    "Resubmit",
    "ResultCache",
    "ResultInbox",
    "ResultStore",
    "StoredLookup",
    "StreamWrites",
    "TenantConsumers",
    "TenantError",
    "Topology",
    "TopologyMismatch",
    "TopologyWatch",
    "Trouble",
    "WebhookSender",
    "add_tenant",
    "cache_key",
    "connect_options",
    "connect_wait_s",
    "consumer_config",
    "consumer_filters",
    "delete_message",
    "encode_result",
    "end_task",
    "ensure_blob_store",
    "ensure_consumers",
    "ensure_streams",
    "ensure_tenant_blobs",
    "ensure_tenant_consumers",
    "ensure_topology",
    "expect_last",
    "fetch_result",
    "first_job_id",
    "job_filters",
    "jobs_subjects",
    "jobs_waiting",
    "list_tenants",
    "missing_topology",
    "open_nats",
    "open_webhooks_bucket",
    "outbox_key",
    "payload_of",
    "quota_of",
    "read_record",
    "read_webhook",
    "remove_tenant",
    "retried_as",
    "retry_headers",
    "retry_ids",
    "stream_configs",
    "subject_matches",
    "sweeper_config",
    "tenant_stream_config",
    "tls_context",
    "upgrade_consumer",
    "write_ticket",
]
