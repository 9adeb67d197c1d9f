"""The NACK resources against the topology the worker would create itself.

A worker that finds a stream or consumer configured differently from its own
(`function/transport/topology.py`, and `tenants.py` for tenants' streams) stops with
`TopologyMismatch`, so NACK must create exactly that. Each resource is turned into
the configuration NACK sends (`tests/manifests/nack.py`) and compared, field by field,
with the worker's: `stream_configs` and `consumer_config`/`sweeper_config` for the open
topology, `tenant_stream_config` (with the quota the resource declares) and
`consumer_config(settings, priority, tenant)` for each tenant's stream. The advisories
stream also captures each declared tenant stream's MAX_DELIVERIES advisories.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from nats.js.api import ConsumerConfig, DiscardPolicy, StreamConfig

from function.contract.settings import (
    ADVISORIES_STREAM,
    ENV_PREFIX,
    JOBS_STREAM,
    TENANT_STREAM_PREFIX,
    Priority,
    WorkerSettings,
    max_deliveries_subject,
    tenant_of_stream,
    tenant_stream,
)
from function.transport.tenants import quota_of, tenant_stream_config
from function.transport.topology import consumer_config, stream_configs, sweeper_config
from tests.manifests import nack
from tests.manifests.kube import Doc
from tests.manifests.lookup import worker_settings

Docs = Sequence[Doc]
Key = tuple[str, str]  # (stream, durable name)

_UNLIMITED: Final = -1
_SERVER_MAX_ACK_PENDING: Final = 1000


def _limit(value: int | None) -> int:
    return value if value and value > 0 else _UNLIMITED


def _round(value: float | None) -> float:
    return round(value or 0.0, 6)


# Each compared field under its NACK name, normalised so that "unset" and the
# server's default compare equal.
STREAM_FIELDS: Final[dict[str, Callable[[StreamConfig], Any]]] = {
    "subjects": lambda c: list(c.subjects or []),
    "retention": lambda c: c.retention.value if c.retention else None,
    "storage": lambda c: c.storage.value if c.storage else None,
    "discard": lambda c: (c.discard or DiscardPolicy.OLD).value,
    "maxAge": lambda c: _round(c.max_age),
    "duplicateWindow": lambda c: _round(c.duplicate_window),
    "maxMsgs": lambda c: _limit(c.max_msgs),
    "maxMsgSize": lambda c: _limit(c.max_msg_size),
    "maxBytes": lambda c: _limit(c.max_bytes),
    "maxMsgsPerSubject": lambda c: _limit(c.max_msgs_per_subject),
    "allowDirect": lambda c: bool(c.allow_direct),
    "replicas": lambda c: c.num_replicas or 1,
    "metadata": lambda c: dict(c.metadata or {}),
}
CONSUMER_FIELDS: Final[dict[str, Callable[[ConsumerConfig], Any]]] = {
    "durableName": lambda c: c.durable_name,
    "filterSubjects": lambda c: list(
        c.filter_subjects or ([c.filter_subject] if c.filter_subject else [])
    ),
    "deliverPolicy": lambda c: c.deliver_policy.value if c.deliver_policy else "all",
    "ackPolicy": lambda c: c.ack_policy.value if c.ack_policy else None,
    "ackWait": lambda c: _round(c.ack_wait),
    "maxDeliver": lambda c: _limit(c.max_deliver),
    "maxAckPending": lambda c: c.max_ack_pending or _SERVER_MAX_ACK_PENDING,
    "deliverSubject": lambda c: c.deliver_subject,  # none: a pull consumer
}
# Where a value comes from, for the messages.
SETTING: Final = {
    "ackWait": "SURGE_ACK_WAIT_S",
    "maxDeliver": "SURGE_MAX_DELIVER",
    "maxAckPending": "SURGE_MAX_ACK_PENDING",
    "duplicateWindow": "SURGE_DEDUPE_WINDOW_S",
}


def _differences(
    where: str, have: Any, want: Any, fields: Mapping[str, Callable[[Any], Any]]
) -> list[str]:
    errors = []
    for field, value_of in fields.items():
        found, wanted = value_of(have), value_of(want)
        if found != wanted:
            hint = f" ({SETTING[field]})" if field in SETTING else ""
            errors.append(f"{where}: {field} is {found!r}, want {wanted!r}{hint}")
    return errors


def stream_differences(spec: Mapping[str, Any], want: StreamConfig) -> list[str]:
    """How the stream NACK makes of `spec` differs from `want` (empty when it does not)."""
    try:
        have = nack.stream_config(spec)
    except (ValueError, KeyError) as error:
        return [f"stream {spec.get('name')}: {error}"]
    return _differences(f"stream {want.name}", have, want, STREAM_FIELDS)


def consumer_differences(spec: Mapping[str, Any], want: ConsumerConfig, stream: str) -> list[str]:
    """How the consumer NACK makes of `spec` differs from `want` on `stream`."""
    where = f"consumer {want.durable_name} on {stream}"
    try:
        have = nack.consumer_config(spec)
    except (ValueError, KeyError) as error:
        return [f"{where}: {error}"]
    return _differences(where, have, want, CONSUMER_FIELDS)


def stream_specs(docs: Docs) -> dict[str, Doc]:
    """Each NACK Stream's spec by stream name."""
    return {d["spec"].get("name"): d["spec"] for d in nack.resources(docs, nack.STREAM_KIND)}


def consumer_specs(docs: Docs) -> dict[Key, Doc]:
    """Each NACK Consumer's spec by (stream, durable name): tenants' share the names."""
    return {
        (d["spec"].get("streamName"), d["spec"].get("durableName")): d["spec"]
        for d in nack.resources(docs, nack.CONSUMER_KIND)
    }


def declared_tenants(docs: Docs) -> list[str]:
    """The tenants that have a NACK Stream (SURGE_TENANT_<tenant>), sorted."""
    return sorted(
        tenant for name in stream_specs(docs) if (tenant := tenant_of_stream(str(name))) is not None
    )


def wanted_streams(docs: Docs, settings: WorkerSettings) -> dict[str, StreamConfig]:
    """What the worker (and `surge tenants add`, with each declared quota) would create."""
    specs = stream_specs(docs)
    wanted = {str(c.name): c for c in stream_configs(settings)}
    tenants = declared_tenants(docs)
    advisories = wanted[ADVISORIES_STREAM]
    advisories.subjects = [
        *(advisories.subjects or []),
        *(max_deliveries_subject("*", tenant_stream(t)) for t in tenants),
    ]
    for tenant in tenants:
        try:
            quota = quota_of(nack.stream_config(specs[tenant_stream(tenant)]))
        except (ValueError, KeyError):
            continue  # reported by stream_differences
        wanted[tenant_stream(tenant)] = tenant_stream_config(tenant, quota, settings)
    return wanted


def wanted_consumers(docs: Docs, settings: WorkerSettings) -> dict[Key, ConsumerConfig]:
    """The function's consumers on the open stream and every declared tenant's, and its
    sweeper."""
    wanted: dict[Key, ConsumerConfig] = {}
    for priority in Priority:
        config = consumer_config(settings, priority)
        wanted[JOBS_STREAM, str(config.durable_name)] = config
        for tenant in declared_tenants(docs):
            config = consumer_config(settings, priority, tenant)
            wanted[tenant_stream(tenant), str(config.durable_name)] = config
    sweeper = sweeper_config(settings)
    wanted[ADVISORIES_STREAM, str(sweeper.durable_name)] = sweeper
    return wanted


def check_jetstream(docs: Docs) -> list[str]:
    """Every NACK Stream and Consumer is what the worker would create; none is missing."""
    settings = worker_settings(docs)
    errors = [
        f"stream {name}: {TENANT_STREAM_PREFIX}<tenant> with an invalid tenant id"
        for name in stream_specs(docs)
        if str(name).startswith(TENANT_STREAM_PREFIX) and tenant_of_stream(str(name)) is None
    ]
    specs, wanted = stream_specs(docs), wanted_streams(docs, settings)
    if set(specs) != set(wanted):
        errors.append(f"streams are {sorted(map(str, specs))}, want {sorted(wanted)}")
    for name, want in wanted.items():
        if name in specs:
            errors += stream_differences(specs[name], want)
    for name in [JOBS_STREAM, *(tenant_stream(t) for t in declared_tenants(docs))]:
        if name in specs and specs[name].get("preventDelete") is not True:
            errors.append(f"stream {name}: preventDelete must be true (it holds queued jobs)")
    consumers, expected = consumer_specs(docs), wanted_consumers(docs, settings)
    if set(consumers) != set(expected):
        errors.append(f"consumers are {sorted(consumers)}, want {sorted(expected)}")
    for (stream, name), config in expected.items():
        if (stream, name) in consumers:
            errors += consumer_differences(consumers[stream, name], config, stream)
    unknown = sorted(set(settings.tenants) - set(declared_tenants(docs)))
    if unknown:
        errors.append(f"{ENV_PREFIX}TENANTS names {unknown}, which have no stream here")
    return errors
