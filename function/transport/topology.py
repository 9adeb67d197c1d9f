"""JetStream streams, consumers and the blob bucket, created idempotently at start.

`ensure_topology()` creates what is missing and compares what exists: a stream or
consumer whose config differs from Surge's is reported as `TopologyMismatch`, never
silently changed (other replicas, or an operator's NACK resources, may depend on it).
The exceptions are known upgrades: a jobs stream from before subjects were narrowed
to `surge.jobs.{high,normal}.<function>` gets the narrow subjects in place, and
consumers and the advisories stream are widened for tenants' streams (`tenants.py`).
`missing_topology()` says what a server lost (a wiped store, memory storage), so the
worker can recreate it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from function.contract.errors import SurgeError
from function.contract.settings import (
    ADVISORIES_STREAM,
    DEAD_STREAM,
    DEAD_SUBJECT_PREFIX,
    JOBS_STREAM,
    JOBS_SUBJECT_PREFIX,
    OBJECT_STORE_BUCKET,
    RESULTS_STREAM,
    RESULTS_SUBJECT_PREFIX,
    Priority,
    WorkerSettings,
    consumer_name,
    job_subject,
    max_deliveries_subject,
    sweeper_name,
)

__all__ = [
    "Topology",
    "TopologyMismatch",
    "consumer_config",
    "consumer_filters",
    "ensure_blob_store",
    "ensure_consumers",
    "ensure_streams",
    "ensure_topology",
    "job_filters",
    "jobs_subjects",
    "jobs_waiting",
    "missing_topology",
    "stream_configs",
    "sweeper_config",
    "upgrade_consumer",
]

log = logging.getLogger("surge.topology")

DEAD_MAX_AGE_S = 14 * 24 * 3600.0


class TopologyMismatch(SurgeError):
    """A stream or consumer on the server differs from what this worker expects."""


@dataclass(frozen=True)
class Topology:
    """What a worker attached to: its consumers (high first) and the blob bucket."""

    consumers: dict[Priority, str]
    sweeper: str
    blobs: ObjectStore


def jobs_subjects() -> list[str]:
    """The open jobs stream takes `surge.jobs.<high|normal>.<function>`, nothing else
    (each tenant's jobs go to the tenant's own stream)."""
    return [f"{JOBS_SUBJECT_PREFIX}.{priority.value}.*" for priority in Priority]


def job_filters(function: str, priority: Priority, tenant: str | None = None) -> list[str]:
    """A function's jobs of one priority, open or of one tenant."""
    return [job_subject(priority, function, tenant)]


# Jobs streams as created by earlier versions (any subject; tenants' subjects in the
# shared stream): narrowed in place, keeping their jobs.
_LEGACY_JOBS_SUBJECTS = (
    [f"{JOBS_SUBJECT_PREFIX}.>"],
    jobs_subjects() + [f"{subject}.*" for subject in jobs_subjects()],
)


def stream_configs(settings: WorkerSettings) -> list[StreamConfig]:
    """The three streams Surge uses, configured from `settings`."""
    return [
        StreamConfig(
            name=JOBS_STREAM,
            subjects=jobs_subjects(),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
            max_age=settings.jobs_max_age_s,
            duplicate_window=settings.dedupe_window_s,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=RESULTS_STREAM,
            subjects=[f"{RESULTS_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
            max_msgs_per_subject=1,
            max_age=settings.results_max_age_s,
            duplicate_window=settings.dedupe_window_s,
            allow_direct=True,
        ),
        StreamConfig(
            name=DEAD_STREAM,
            subjects=[f"{DEAD_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
            max_age=DEAD_MAX_AGE_S,
        ),
        StreamConfig(
            name=ADVISORIES_STREAM,
            subjects=[max_deliveries_subject("*")],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=settings.stream_replicas,
            max_age=DEAD_MAX_AGE_S,
        ),
    ]


def consumer_config(
    settings: WorkerSettings, priority: Priority, tenant: str | None = None
) -> ConsumerConfig:
    """Durable pull consumer for one priority of `settings.function` (on the open jobs
    stream, or with `tenant` on that tenant's stream: same name, different stream)."""
    name = consumer_name(settings.function, priority)
    return ConsumerConfig(
        durable_name=name,
        name=name,
        filter_subjects=job_filters(settings.function, priority, tenant),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
    )


def sweeper_config(settings: WorkerSettings) -> ConsumerConfig:
    """Durable pull consumer of the function's captured MAX_DELIVERIES advisories, from
    the open jobs stream and every tenant's."""
    name = sweeper_name(settings.function)
    return ConsumerConfig(
        durable_name=name,
        name=name,
        filter_subjects=[
            max_deliveries_subject(consumer_name(settings.function, p), "*") for p in Priority
        ],
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_ack_pending=64,
    )


_STREAM_FIELDS = ("subjects", "retention", "max_msgs_per_subject")
_CONSUMER_FIELDS = ("filter_subjects", "ack_policy", "ack_wait", "max_deliver", "max_ack_pending")


def consumer_filters(config: ConsumerConfig) -> list[str]:
    """A consumer's filter subjects, however they were sent: NACK (jsm.go) sends one
    filter as `filter_subject`, Surge as a one-item `filter_subjects`; the same to the server."""
    if config.filter_subjects:
        return list(config.filter_subjects)
    return [config.filter_subject] if config.filter_subject else []


def _differences(want: Any, have: Any, fields: tuple[str, ...]) -> list[str]:
    diffs = []
    for field in fields:
        wanted, found = getattr(want, field), getattr(have, field)
        if field == "filter_subjects":
            wanted, found = consumer_filters(want), consumer_filters(have)
        if isinstance(wanted, float) and isinstance(found, float):
            same = abs(wanted - found) < 1e-6
        else:
            same = wanted == found
        if not same:
            diffs.append(f"{field}: server has {found!r}, worker wants {wanted!r}")
    return diffs


async def ensure_streams(js: JetStreamContext, settings: WorkerSettings) -> None:
    """Create missing streams; raise `TopologyMismatch` for one that differs."""
    for config in stream_configs(settings):
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config=config)
            log.info("created stream %s", config.name)
            continue
        if config.name == JOBS_STREAM and info.config.subjects in _LEGACY_JOBS_SUBJECTS:
            await _upgrade_jobs_stream(js, config, info.config)
            continue
        if config.name == ADVISORIES_STREAM and set(config.subjects or ()) <= set(
            info.config.subjects or ()
        ):
            continue  # tenants' streams add their advisory subjects
        diffs = _differences(config, info.config, _STREAM_FIELDS)
        if diffs:
            raise TopologyMismatch(f"stream {config.name} differs: " + "; ".join(diffs))


async def _upgrade_jobs_stream(js: JetStreamContext, want: StreamConfig, have: Any) -> None:
    """Set an earlier version's jobs stream subjects (narrowed, with tenant subjects),
    keeping its jobs.

    Its maximum age is left as it was: adding one would drop queued jobs without an
    answer. Set it with `nats stream edit` (or NACK) once the backlog is drained.
    """
    have.subjects = want.subjects
    await js.update_stream(config=have)
    log.warning(
        "upgraded stream %s: subjects %s; its max age is unchanged (%s), set it to %.0fs "
        "when the backlog allows",
        JOBS_STREAM,
        want.subjects,
        have.max_age or "none",
        want.max_age,
    )


async def missing_topology(js: JetStreamContext, settings: WorkerSettings) -> list[str]:
    """Names of the streams and consumers Surge needs that the server does not have."""
    missing = []
    for config in stream_configs(settings):
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            missing.append(f"stream {config.name}")
    wanted = [(JOBS_STREAM, consumer_config(settings, p).durable_name) for p in Priority]
    wanted.append((ADVISORIES_STREAM, sweeper_config(settings).durable_name))
    for stream, name in wanted:
        if f"stream {stream}" in missing:
            missing.append(f"consumer {name}")
            continue
        try:
            await js.consumer_info(stream, name or "")
        except NotFoundError:
            missing.append(f"consumer {name}")
    return missing


async def upgrade_consumer(
    js: JetStreamContext, config: ConsumerConfig, info: ConsumerInfo
) -> ConsumerInfo:
    """Narrow an earlier version's open-jobs consumer (`info`: the open subject plus every
    tenant's) to `config`'s filter; any other is returned as it is."""
    open_subject = (config.filter_subjects or [""])[0]
    if consumer_filters(info.config) != [open_subject, f"{open_subject}.*"]:
        return info
    await js.add_consumer(JOBS_STREAM, config=config)
    log.info("consumer %s upgraded to filter %s", config.durable_name, config.filter_subjects)
    updated: ConsumerInfo = await js.consumer_info(JOBS_STREAM, config.durable_name or "")
    return updated


async def ensure_consumers(js: JetStreamContext, settings: WorkerSettings) -> dict[Priority, str]:
    """Create missing consumers (high, then normal); raise `TopologyMismatch` on differences."""
    names: dict[Priority, str] = {}
    for priority in (Priority.HIGH, Priority.NORMAL):
        config = consumer_config(settings, priority)
        assert config.durable_name is not None
        try:
            info = await js.consumer_info(JOBS_STREAM, config.durable_name)
        except NotFoundError:
            await js.add_consumer(JOBS_STREAM, config=config)
            log.info("created consumer %s", config.durable_name)
        else:
            info = await upgrade_consumer(js, config, info)
            diffs = _differences(config, info.config, _CONSUMER_FIELDS)
            if diffs:
                raise TopologyMismatch(
                    f"consumer {config.durable_name} differs: " + "; ".join(diffs)
                )
        names[priority] = config.durable_name
    sweeper = sweeper_config(settings)
    try:
        found = await js.consumer_info(ADVISORIES_STREAM, sweeper.durable_name or "")
    except NotFoundError:
        await js.add_consumer(ADVISORIES_STREAM, config=sweeper)
        log.info("created consumer %s", sweeper.durable_name)
    else:
        if found.config.filter_subjects != sweeper.filter_subjects:  # before tenants' streams
            await js.add_consumer(ADVISORIES_STREAM, config=sweeper)
            log.info("consumer %s now sweeps tenants' streams too", sweeper.durable_name)
    return names


async def ensure_blob_store(js: JetStreamContext, settings: WorkerSettings) -> ObjectStore:
    """The Object Store bucket for large inputs and outputs."""
    try:
        return await js.object_store(OBJECT_STORE_BUCKET)
    except NotFoundError:
        config = ObjectStoreConfig(
            bucket=OBJECT_STORE_BUCKET, ttl=settings.blob_ttl_s, replicas=settings.stream_replicas
        )
        return await js.create_object_store(OBJECT_STORE_BUCKET, config=config)


async def jobs_waiting(js: JetStreamContext, consumers: dict[Priority, str]) -> int:
    """Open jobs not yet delivered to `consumers` (tenants' streams are not counted)."""
    waiting = 0
    for name in consumers.values():
        info = await js.consumer_info(JOBS_STREAM, name)
        waiting += int(info.num_pending or 0)
    return waiting


async def ensure_topology(js: JetStreamContext, settings: WorkerSettings) -> Topology:
    """Streams, consumers and bucket for `settings.function`."""
    await ensure_streams(js, settings)
    consumers = await ensure_consumers(js, settings)
    blobs = await ensure_blob_store(js, settings)
    return Topology(consumers=consumers, sweeper=sweeper_name(settings.function), blobs=blobs)
