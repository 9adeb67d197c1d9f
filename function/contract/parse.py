"""Parsing between bytes and models: a NATS message in, a `JobRequest` out (or `BadInput`).

A job arrives on `surge.jobs.<priority>.<function>` as one of:

* raw image bytes, with `Content-Type: image/png|image/jpeg|image/webp` (or sniffed);
* a JSON envelope (`Content-Type: application/json`), see `JobEnvelope`;
* a CloudEvent, structured (`application/cloudevents+json`) or binary (`ce-*` headers).

Parsing is pure: `parse_job()` takes subject, headers and payload and returns a
`JobRequest` or raises `BadInput`; it never touches the network. `job_headers()` is
its inverse for publishers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, ParamSpec, TypeVar

from pydantic import (
    BaseModel,
    ValidationError,
)

from function.contract.bounds import (
    MAX_CONTENT_TYPE_CHARS,
    MAX_DEADLINE_CHARS,
    MAX_OUTPUT_NAME_CHARS,
    MAX_OUTPUTS,
    check_reply_subject,
    loads_bounded,
    quote,
    safe_reply_to,
)
from function.contract.errors import BadInput, ErrorCode, SurgeError
from function.contract.settings import JOBS_SUBJECT_PREFIX, Header, Priority, is_valid_tenant
from function.contract.webhooks import webhook_url_problem
from function.contract.wire import (
    CloudEvent,
    JobEnvelope,
    JobRequest,
    as_utc,
)

__all__ = [
    "CLOUDEVENTS_JSON",
    "AnswerAddress",
    "JobSubject",
    "answer_address",
    "check_tenant_blob",
    "derive_job_id",
    "is_valid_job_id",
    "job_headers",
    "job_id_for",
    "msg_id_for",
    "parse_job",
    "parse_subject",
    "sniff_image_type",
    "tenant_blob_prefix",
    "tenant_of",
]

P = ParamSpec("P")
T = TypeVar("T")

CLOUDEVENTS_JSON = "application/cloudevents+json"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


def job_headers(
    job_id: str,
    *,
    content_type: str | None = None,
    reply_to: str | None = None,
    deadline: datetime | None = None,
    outputs: Iterable[str] = (),
    tenant: str | None = None,
    webhook: str | None = None,
) -> dict[str, str]:
    """The headers a job is published with: what `parse_job` reads back."""
    headers = {Header.MSG_ID: msg_id_for(job_id, tenant)}
    if content_type:
        headers[Header.CONTENT_TYPE] = content_type
    if reply_to:
        headers[Header.REPLY_TO] = reply_to
    if deadline is not None:
        headers[Header.DEADLINE] = deadline.isoformat()
    names = list(outputs)
    if names:
        headers[Header.OUTPUTS] = ",".join(names)
    if webhook:
        headers[Header.WEBHOOK] = webhook
    return headers


def msg_id_for(job_id: str, tenant: str | None) -> str:
    """A job's `Nats-Msg-Id`: a tenant's carries its tenant, so two tenants' jobs with the
    same id are not one job to JetStream's de-duplication."""
    return f"{tenant}:{job_id}" if tenant else job_id


def _job_id_in(msg_id: str, tenant: str | None) -> str:
    """The job id inside a `Nats-Msg-Id` (without its tenant's `<tenant>:`)."""
    if tenant and msg_id.startswith(f"{tenant}:"):
        return msg_id[len(tenant) + 1 :]
    return msg_id


class JobSubject(NamedTuple):
    priority: Priority
    function: str
    tenant: str | None


def parse_subject(subject: str) -> JobSubject:
    """Split `surge.jobs.<priority>.<function>[.<tenant>]` into its parts."""
    prefix = JOBS_SUBJECT_PREFIX + "."
    parts = subject[len(prefix) :].split(".") if subject.startswith(prefix) else []
    if len(parts) not in (2, 3) or parts[0] not in Priority.__members__.values():
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"not a job subject: {quote(subject)}")
    tenant = parts[2] if len(parts) == 3 else None
    if tenant is not None and not is_valid_tenant(tenant):
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"not a tenant id: {quote(tenant)}")
    return JobSubject(Priority(parts[0]), parts[1], tenant)


def tenant_of(subject: str) -> str | None:
    """The tenant a job subject names, or None (open, or not a job subject at all)."""
    try:
        return parse_subject(subject).tenant
    except BadInput:
        return None


_JOB_ID = re.compile(r"^[!-~]{1,256}$")  # printable ASCII, no space


def is_valid_job_id(job_id: str) -> bool:
    """A job id must be one NATS subject token of printable ASCII: no dots or wildcards."""
    return bool(_JOB_ID.match(job_id)) and not any(c in job_id for c in ".*>")


def derive_job_id(stream: str, sequence: int) -> str:
    """A stable job id for a message published without one (same on every redelivery)."""
    digest = hashlib.sha256(f"{stream}:{sequence}".encode()).hexdigest()
    return f"j-{digest[:24]}"


def job_id_for(
    headers: Mapping[str, str] | None, stream: str, sequence: int, tenant: str | None = None
) -> str:
    """The job id a message answers to: its valid `Nats-Msg-Id`, else one derived from
    its stream sequence (for error results and dead letters of unparsable messages)."""
    given = _job_id_in((headers or {}).get(Header.MSG_ID, ""), tenant)
    return given if given and is_valid_job_id(given) else derive_job_id(stream, sequence)


def sniff_image_type(data: bytes) -> str | None:
    """Media type from magic bytes, or None."""
    for magic, media in _MAGIC:
        if data.startswith(magic):
            return media
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _media(content_type: str | None) -> str | None:
    return content_type.split(";")[0].strip().lower() if content_type else None


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"{what} is not valid base64") from exc


def _deadline(value: str | None) -> datetime | None:
    if not value:
        return None
    problem = f"bad {Header.DEADLINE} {quote(value)}: use RFC 3339 or Unix seconds"
    if len(value) > MAX_DEADLINE_CHARS or not value.isascii():
        raise BadInput(ErrorCode.BAD_ENVELOPE, problem)
    try:
        if value.replace(".", "", 1).isdigit():
            seconds = float(value)
            if not math.isfinite(seconds):
                raise ValueError(value)
            return datetime.fromtimestamp(seconds, UTC)
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadInput(ErrorCode.BAD_ENVELOPE, problem) from exc
    return as_utc(parsed)


def _outputs(value: str) -> tuple[str, ...]:
    names = tuple(o.strip() for o in value.split(",") if o.strip())
    if len(names) > MAX_OUTPUTS or any(len(n) > MAX_OUTPUT_NAME_CHARS for n in names):
        raise BadInput(
            ErrorCode.BAD_ENVELOPE,
            f"{Header.OUTPUTS} takes at most {MAX_OUTPUTS} names of at most "
            f"{MAX_OUTPUT_NAME_CHARS} characters",
        )
    return names


def _webhook(url: str | None, allow_hosts: Iterable[str]) -> str | None:
    if url is None:
        return None
    problem = webhook_url_problem(url, allow_hosts)
    if problem is not None:
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"{Header.WEBHOOK}: {problem}")
    return url


def _validate(model: type[BaseModel], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise BadInput(
            ErrorCode.BAD_ENVELOPE, f"{what}: {quote(where)}: {quote(first['msg'], 200)}"
        ) from exc


def _from_envelope(env: JobEnvelope, base: dict[str, Any]) -> dict[str, Any]:
    if (env.image is None) == (env.image_ref is None):
        raise BadInput(ErrorCode.BAD_ENVELOPE, "envelope needs exactly one of image, image_ref")
    if env.function is not None and env.function != base["function"]:
        raise BadInput(
            ErrorCode.UNKNOWN_FUNCTION,
            f"envelope asks for function {quote(env.function)} but was published for "
            f"{quote(base['function'])}; publish to that function's subject",
        )
    for key in ("job_id", "reply_to", "deadline"):
        value = getattr(env, key)
        if value is not None and base.get(key) is None:
            base[key] = value
    if env.outputs is not None:
        base["outputs"] = tuple(env.outputs)
    base["content_type"] = _media(env.content_type)
    base["image"] = _b64(env.image, "image") if env.image is not None else None
    base["image_ref"] = env.image_ref
    return base


def _from_cloudevent(ce: CloudEvent, data: bytes | None, base: dict[str, Any]) -> dict[str, Any]:
    base.setdefault("job_id", None)
    base["job_id"] = base["job_id"] or ce.id
    media = _media(ce.datacontenttype)
    if data is None:
        if ce.data_base64 is not None:
            data = _b64(ce.data_base64, "data_base64")
        elif isinstance(ce.data, dict):
            return _from_envelope(_validate(JobEnvelope, ce.data, "CloudEvent data"), base)
        else:
            raise BadInput(ErrorCode.BAD_ENVELOPE, "CloudEvent carries no image data")
    if media in ("application/json", None) and data[:1] == b"{":
        env = _validate(JobEnvelope, loads_bounded(data, "CloudEvent data"), "CloudEvent data")
        return _from_envelope(env, base)
    base["content_type"] = media
    base["image"] = data
    return base


def _input_at_fault(parse: Callable[P, T]) -> Callable[P, T]:
    """Whatever goes wrong while parsing is the input's fault: any exception but
    `MemoryError` becomes `BadInput`, never a retry."""

    @functools.wraps(parse)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return parse(*args, **kwargs)
        except (SurgeError, MemoryError):
            raise
        except Exception as exc:
            raise BadInput(
                ErrorCode.BAD_ENVELOPE, f"unparsable job ({type(exc).__name__})"
            ) from exc

    return guarded


@_input_at_fault
def parse_job(
    subject: str,
    headers: Mapping[str, str] | None,
    data: bytes,
    *,
    stream: str = "",
    sequence: int = 0,
    max_payload: int | None = None,
    webhook_hosts: Iterable[str] = (),
) -> JobRequest:
    """Turn one NATS message into a `JobRequest`; raise `BadInput` for anything malformed.
    A `Surge-Webhook` URL is checked against `webhook_hosts` (see `webhook_url_problem`)."""
    headers = headers or {}
    priority, function, tenant = parse_subject(subject)
    if max_payload is not None and len(data) > max_payload:
        raise BadInput(
            ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {len(data)} bytes, limit {max_payload}"
        )
    base: dict[str, Any] = {
        "job_id": _job_id_in(headers.get(Header.MSG_ID, ""), tenant) or headers.get(Header.JOB_ID),
        "function": function,
        "priority": priority,
        "tenant": tenant,
        "reply_to": headers.get(Header.REPLY_TO),
        "deadline": _deadline(headers.get(Header.DEADLINE)),
        "outputs": _outputs(headers.get(Header.OUTPUTS, "")),
        "webhook": _webhook(headers.get(Header.WEBHOOK), webhook_hosts),
    }
    if base["reply_to"] is not None:
        check_reply_subject(base["reply_to"], Header.REPLY_TO, tenant)
    declared = headers.get(Header.CONTENT_TYPE)
    if declared is not None and len(declared) > MAX_CONTENT_TYPE_CHARS:
        raise BadInput(
            ErrorCode.BAD_ENVELOPE, f"{Header.CONTENT_TYPE} {quote(declared)} is too long"
        )
    media = _media(declared)
    if Header.CE_SPECVERSION in headers:
        attrs: dict[str, str | None] = {
            k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-")
        }
        attrs["datacontenttype"] = media
        fields = _from_cloudevent(_validate(CloudEvent, attrs, "CloudEvent headers"), data, base)
    elif media == CLOUDEVENTS_JSON or (media is None and data[:1] == b"{"):
        doc = loads_bounded(data, "payload")
        if isinstance(doc, dict) and "specversion" in doc:
            fields = _from_cloudevent(_validate(CloudEvent, doc, "CloudEvent"), None, base)
        else:
            fields = _from_envelope(_validate(JobEnvelope, doc, "envelope"), base)
    elif media == "application/json":
        doc = loads_bounded(data, "payload")
        fields = _from_envelope(_validate(JobEnvelope, doc, "envelope"), base)
    else:
        fields = {**base, "content_type": media, "image": data}
    if not fields.get("job_id"):
        fields["job_id"] = derive_job_id(stream, sequence)
    if not is_valid_job_id(fields["job_id"]):
        raise BadInput(
            ErrorCode.BAD_ENVELOPE,
            f"job id {quote(fields['job_id'])} must be 1-256 printable ASCII characters "
            "without '.', '*', '>' or spaces",
        )
    if fields.get("reply_to") is not None:
        check_reply_subject(fields["reply_to"], "reply_to", tenant)
    if tenant is not None and fields.get("image_ref") is not None:
        check_tenant_blob(fields["image_ref"], tenant)
    if fields.get("image") is not None and not fields["image"]:
        raise BadInput(ErrorCode.BAD_IMAGE, "empty image payload")
    return JobRequest.model_validate(fields)


def tenant_blob_prefix(tenant: str) -> str:
    """Where a tenant's uploads live in the blob bucket: its jobs may name nothing else."""
    return f"tenants/{tenant}/"


def check_tenant_blob(name: str, tenant: str) -> None:
    """Raise `BadInput` unless blob `name` lies under `tenant`'s own prefix."""
    if not name.startswith(tenant_blob_prefix(tenant)) or ".." in name:
        raise BadInput(
            ErrorCode.BAD_ENVELOPE,
            f"image_ref {quote(name)} is outside tenant {tenant}'s {tenant_blob_prefix(tenant)}",
        )


class AnswerAddress(NamedTuple):
    job_id: str
    reply_to: str | None
    tenant: str | None


def answer_address(
    subject: str, headers: Mapping[str, str] | None, data: bytes, *, stream: str, sequence: int
) -> AnswerAddress:
    """The job id, reply subject and tenant a raw job message answers to: parsed where it
    parses (an envelope's or CloudEvent's own id and reply subject), else from its headers."""
    try:
        request = parse_job(subject, headers, data, stream=stream, sequence=sequence)
    except BadInput:
        tenant = tenant_of(subject)
        return AnswerAddress(
            job_id_for(headers, stream, sequence, tenant), safe_reply_to(headers, tenant), tenant
        )
    return AnswerAddress(request.job_id, request.reply_to, request.tenant)
