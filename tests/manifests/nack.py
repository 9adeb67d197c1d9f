"""What NACK makes of a Stream or Consumer resource: the JetStream configuration it sends.

NACK (nats-io/nack, `internal/controller/{stream,consumer}_controller.go`, through
jsm.go) maps a resource's `spec` onto a stream or consumer configuration after the API
server has filled in the CRD's defaults. This module does the same for the fields
Surge's resources use, so that the tests can compare the result with what the worker
would create itself (`function/transport/topology.py`, `tenants.py`) and can apply the
rendered resources to a real nats-server as NACK would. A field it does not know is an
error, not silently skipped.

Two of NACK's ways matter to the worker:

- a consumer with one filter subject is created with `filter_subject`, not
  `filter_subjects` (jsm.go's `FilterStreamBySubject`), whichever the resource uses;
- on every reconcile NACK puts a drifted stream or consumer back to its resource,
  so anything changed on the server by hand (or by `surge tenants add`) is undone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ReplayPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from tests.manifests.kube import SCHEMAS, Doc, go_duration

STREAM_KIND: Final = ("jetstream.nats.io/v1beta2", "Stream")
CONSUMER_KIND: Final = ("jetstream.nats.io/v1beta2", "Consumer")

# Fields that decide whether, not how, NACK manages the object.
_CONTROL: Final = frozenset({"preventDelete", "preventUpdate"})
_STREAM_FIELDS: Final = frozenset(
    {
        "name",
        "description",
        "subjects",
        "retention",
        "storage",
        "discard",
        "maxAge",
        "duplicateWindow",
        "maxMsgs",
        "maxMsgSize",
        "maxBytes",
        "maxConsumers",
        "maxMsgsPerSubject",
        "allowDirect",
        "replicas",
        "metadata",
    }
)
_CONSUMER_FIELDS: Final = frozenset(
    {
        "streamName",
        "durableName",
        "description",
        "filterSubject",
        "filterSubjects",
        "deliverPolicy",
        "ackPolicy",
        "ackWait",
        "maxDeliver",
        "maxAckPending",
        "replayPolicy",
        "metadata",
    }
)
_DELIVER: Final = {
    "all": DeliverPolicy.ALL,
    "last": DeliverPolicy.LAST,
    "new": DeliverPolicy.NEW,
    "lastPerSubject": DeliverPolicy.LAST_PER_SUBJECT,
}


@functools.cache
def crd_defaults(schema: str) -> dict[str, Any]:
    """The `spec` defaults of a NACK CRD, as the API server fills them in."""
    loaded = json.loads((SCHEMAS / schema).read_text())
    properties = loaded["properties"]["spec"]["properties"]
    return {key: value["default"] for key, value in properties.items() if "default" in value}


def _with_defaults(spec: Mapping[str, Any], schema: str, known: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(spec) - known - _CONTROL)
    if unknown:
        raise ValueError(f"fields {unknown} are not emulated (tests/manifests/nack.py)")
    return {**crd_defaults(schema), **spec}


def _seconds(text: str) -> float:
    return go_duration(text) if text else 0.0


def stream_config(spec: Mapping[str, Any]) -> StreamConfig:
    """The stream configuration NACK creates for a Stream resource's `spec`."""
    s = _with_defaults(spec, "NackStream.strict.json", _STREAM_FIELDS)
    config = StreamConfig(
        name=s.get("name"),
        description=s.get("description") or None,
        subjects=list(s.get("subjects") or []),
        retention=RetentionPolicy(s["retention"]),
        storage=StorageType(s["storage"]),
        discard=DiscardPolicy(s["discard"]),
        max_consumers=s["maxConsumers"],
        max_msgs=s["maxMsgs"],
        max_bytes=s["maxBytes"],
        max_msg_size=s["maxMsgSize"],
        num_replicas=s["replicas"],
        allow_direct=s["allowDirect"],
        metadata=dict(s["metadata"]) if s.get("metadata") else None,
    )
    if s["maxMsgsPerSubject"] > 0:
        config.max_msgs_per_subject = s["maxMsgsPerSubject"]
    if _seconds(s["maxAge"]) > 0:
        config.max_age = _seconds(s["maxAge"])
    if _seconds(s.get("duplicateWindow", "")) > 0:
        config.duplicate_window = _seconds(s["duplicateWindow"])
    return config


def consumer_config(spec: Mapping[str, Any]) -> ConsumerConfig:
    """The consumer configuration NACK creates for a Consumer resource's `spec`."""
    s = _with_defaults(spec, "NackConsumer.strict.json", _CONSUMER_FIELDS)
    if s.get("filterSubject") and s.get("filterSubjects"):
        raise ValueError("cannot set both 'filterSubject' and 'filterSubjects'")
    one = s.get("filterSubject")
    filters = [one] if one else list(s.get("filterSubjects") or [])
    config = ConsumerConfig(
        durable_name=s.get("durableName"),
        name=s.get("durableName"),
        description=s.get("description") or None,
        deliver_policy=_DELIVER[s["deliverPolicy"]],
        ack_policy=AckPolicy(s["ackPolicy"]),
        ack_wait=_seconds(s["ackWait"]) or None,
        replay_policy=ReplayPolicy(s["replayPolicy"]),
        max_ack_pending=s.get("maxAckPending") or None,
        max_deliver=s.get("maxDeliver") or None,
        metadata=dict(s["metadata"]) if s.get("metadata") else None,
    )
    if len(filters) == 1:  # jsm.go: one filter goes into filter_subject
        config.filter_subject = filters[0]
    elif filters:
        config.filter_subjects = filters
    return config


def resources(docs: Iterable[Doc], kind: tuple[str, str]) -> list[Doc]:
    return [d for d in docs if (d.get("apiVersion"), d.get("kind")) == kind]


async def apply(js: JetStreamContext, docs: Iterable[Doc]) -> None:
    """Create or update every NACK Stream, then every Consumer, as NACK would."""
    docs = list(docs)
    for doc in resources(docs, STREAM_KIND):
        config = stream_config(doc["spec"])
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config=config)
        else:
            await js.update_stream(config=config)
    for doc in resources(docs, CONSUMER_KIND):
        await js.add_consumer(doc["spec"]["streamName"], config=consumer_config(doc["spec"]))
