"""Tenants' job streams: one `SURGE_TENANT_<id>` per tenant, the record of its quotas.

A tenant's jobs (`surge.jobs.<priority>.<function>.<tenant>`) are stored on a stream of
their own, which gives each tenant what a shared stream cannot:

- its own de-duplication window, so no tenant can squat another's `Nats-Msg-Id`;
- its own limits, enforced by the server at publish: `max_pending` is `max_msgs` and
  `max_payload` is `max_msg_size` (discard-new: the publish is refused, nothing queued
  is dropped); `max_rate` sits in the stream's metadata for the workers;
- its own consumers (same names as the open ones), which workers serve in turn, so one
  tenant's backlog never holds back another's jobs.

`add_tenant` creates or updates it (and lets the advisories stream capture its
MAX_DELIVERIES advisories) and the tenant's own blob bucket (`surge-blobs-<tenant>`, for
inputs over the message size); workers and the scaler find tenants with `list_tenants`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from function.contract.errors import SurgeError
from function.contract.quota import RATE_METADATA_KEY, TenantQuota
from function.contract.settings import (
    ADVISORIES_STREAM,
    JOBS_SUBJECT_PREFIX,
    Priority,
    WorkerSettings,
    is_valid_tenant,
    max_deliveries_subject,
    tenant_blob_bucket,
    tenant_of_stream,
    tenant_stream,
)
from function.transport.topology import (
    TopologyMismatch,
    consumer_config,
    consumer_filters,
    ensure_streams,
)

__all__ = [
    "TenantError",
    "add_tenant",
    "ensure_tenant_blobs",
    "ensure_tenant_consumers",
    "list_tenants",
    "quota_of",
    "remove_tenant",
    "tenant_stream_config",
]

log = logging.getLogger("surge.tenants")

_UNLIMITED = -1


class TenantError(SurgeError):
    """A tenant id that is not valid, or a tenant that cannot be removed."""


def tenant_stream_config(tenant: str, quota: TenantQuota, settings: WorkerSettings) -> StreamConfig:
    """The stream for `tenant`'s jobs, with `quota`'s server-enforced limits."""
    if not is_valid_tenant(tenant):
        raise TenantError(f"not a valid tenant id: {tenant!r}")
    metadata = {} if quota.max_rate is None else {RATE_METADATA_KEY: f"{quota.max_rate:g}"}
    return StreamConfig(
        name=tenant_stream(tenant),
        subjects=[f"{JOBS_SUBJECT_PREFIX}.*.*.{tenant}"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        max_age=settings.jobs_max_age_s,
        duplicate_window=settings.dedupe_window_s,
        discard=DiscardPolicy.NEW,
        max_msgs=quota.max_pending or _UNLIMITED,
        max_msg_size=quota.max_payload or _UNLIMITED,
        metadata=metadata,
    )


def quota_of(config: StreamConfig) -> TenantQuota:
    """The quota a tenant's stream holds."""
    rate = (config.metadata or {}).get(RATE_METADATA_KEY)
    try:
        max_rate = float(rate) if rate is not None else None
    except ValueError:
        max_rate = None
    return TenantQuota(
        max_pending=config.max_msgs if (config.max_msgs or 0) > 0 else None,
        max_payload=config.max_msg_size if (config.max_msg_size or 0) > 0 else None,
        max_rate=max_rate if max_rate and max_rate > 0 else None,
    )


async def list_tenants(js: JetStreamContext, *, timeout: float = 5.0) -> dict[str, TenantQuota]:
    """Every tenant that has a jobs stream on the server, with its quota (all pages of
    the server's stream list, within `timeout` seconds in all)."""
    return await asyncio.wait_for(_list_tenants(js), timeout)


async def _list_tenants(js: JetStreamContext) -> dict[str, TenantQuota]:
    tenants: dict[str, TenantQuota] = {}
    offset = 0
    while True:
        page = await js.streams_info_iterator(offset=offset)
        count = 0
        for info in page:
            count += 1
            tenant = tenant_of_stream(info.config.name or "")
            if tenant is not None:
                tenants[tenant] = quota_of(info.config)
        offset += count
        if count == 0 or offset >= int(getattr(page, "total", 0)):
            return dict(sorted(tenants.items()))


async def add_tenant(
    js: JetStreamContext, tenant: str, quota: TenantQuota, settings: WorkerSettings
) -> bool:
    """Create `tenant`'s stream, or set its quota; True when it was created."""
    config = tenant_stream_config(tenant, quota, settings)
    await _capture_advisories(js, tenant, settings)
    await ensure_tenant_blobs(js, tenant, settings)
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config=config)
        log.info("added tenant %s (%s)", tenant, quota.describe())
        return True
    await js.update_stream(config=config)
    log.info("tenant %s now has %s", tenant, quota.describe())
    return False


async def ensure_tenant_blobs(
    js: JetStreamContext, tenant: str, settings: WorkerSettings
) -> ObjectStore:
    """`tenant`'s Object Store bucket, created if missing."""
    bucket = tenant_blob_bucket(tenant)
    try:
        return await js.object_store(bucket)
    except NotFoundError:
        config = ObjectStoreConfig(
            bucket=bucket, ttl=settings.blob_ttl_s, replicas=settings.stream_replicas
        )
        return await js.create_object_store(bucket, config=config)


async def _capture_advisories(js: JetStreamContext, tenant: str, settings: WorkerSettings) -> None:
    """Let the advisories stream hold the MAX_DELIVERIES advisories of `tenant`'s stream."""
    subject = max_deliveries_subject("*", tenant_stream(tenant))
    try:
        info = await js.stream_info(ADVISORIES_STREAM)
    except NotFoundError:  # nothing has run on this server yet: create Surge's streams
        await ensure_streams(js, settings)
        info = await js.stream_info(ADVISORIES_STREAM)
    subjects = list(info.config.subjects or [])
    if subject not in subjects:
        info.config.subjects = [*subjects, subject]
        await js.update_stream(config=info.config)


async def remove_tenant(js: JetStreamContext, tenant: str, *, force: bool = False) -> int:
    """Delete `tenant`'s stream; refuse while jobs are queued unless `force`. Returns the
    number of queued jobs that were dropped."""
    name = tenant_stream(tenant)
    info = await js.stream_info(name)
    queued = int(info.state.messages or 0)
    if queued and not force:
        raise TenantError(f"tenant {tenant} has {queued} queued jobs (use --force to drop them)")
    await js.delete_stream(name)
    with contextlib.suppress(NotFoundError):
        await js.delete_object_store(tenant_blob_bucket(tenant))
    log.info("removed tenant %s (%d queued jobs dropped)", tenant, queued)
    return queued


async def ensure_tenant_consumers(
    js: JetStreamContext, settings: WorkerSettings, tenant: str
) -> dict[Priority, str]:
    """The function's consumers on `tenant`'s stream (high, then normal), created if missing."""
    stream = tenant_stream(tenant)
    names: dict[Priority, str] = {}
    for priority in (Priority.HIGH, Priority.NORMAL):
        config = consumer_config(settings, priority, tenant)
        assert config.durable_name is not None
        try:
            info = await js.consumer_info(stream, config.durable_name)
        except NotFoundError:
            await js.add_consumer(stream, config=config)
            log.info("created consumer %s on %s", config.durable_name, stream)
        else:
            if consumer_filters(info.config) != config.filter_subjects:
                raise TopologyMismatch(
                    f"consumer {config.durable_name} on {stream} filters "
                    f"{consumer_filters(info.config)}, worker wants {config.filter_subjects}"
                )
        names[priority] = config.durable_name
    return names
