"""Signed webhooks: the signature a result's delivery carries, each tenant's secret, which
URLs may receive one, and the record kept of each delivery. Pure: no I/O.

A delivery is a POST of the job's stored result JSON (the exact bytes) with::

    Surge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + body)>

A receiver recomputes the HMAC over the timestamp and the raw body with its secret,
compares in constant time, and refuses a timestamp too far from its clock (a replay):
`verify` does all of it. Each tenant has its own secret, derived from the one master
secret the server keeps (`SURGE_WEBHOOK_SECRET`): `tenant_secret`, printed for an
operator by `surge tenants webhook-secret`.

`webhook_url_problem` keeps webhooks off the worker's own network (SSRF): with an allow
list only its hosts; without one, no literal loopback, private, link-local or unspecified
address and no `localhost`. A name that *resolves* to such an address is not caught here:
where that matters, set the allow list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from function.contract.errors import SurgeError

__all__ = [
    "MAX_WEBHOOK_URL_CHARS",
    "OPEN_JOBS_KEY",
    "SIGNATURE_TOLERANCE_S",
    "WEBHOOKS_BUCKET",
    "BadSignature",
    "WebhookRecord",
    "WebhookState",
    "sign",
    "tenant_secret",
    "verify",
    "webhook_key",
    "webhook_url_problem",
]

WEBHOOKS_BUCKET: Final = "surge-webhooks"  # KV: one `WebhookRecord` per job with a webhook
OPEN_JOBS_KEY: Final = "_open"  # stands for "no tenant" (never a tenant id: starts with _)
MAX_WEBHOOK_URL_CHARS: Final = 2048
SIGNATURE_TOLERANCE_S: Final = 300
_MAX_HEADER_CHARS: Final = 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SECONDS = re.compile(r"^[0-9]{1,12}$")
_KV_TOKEN = re.compile(r"^[-/_=A-Za-z0-9]+$")


class BadSignature(SurgeError):
    """A delivery whose `Surge-Signature` does not check out; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Surge-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def _parts(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a header; `BadSignature` when malformed."""
    stamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise BadSignature("malformed signature header: items are key=value")
        if key == "t":
            stamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(stamps) != 1 or not _SECONDS.match(stamps[0]):
        raise BadSignature("malformed signature header: one t=<unix seconds> is needed")
    if not signatures or not all(_HEX64.match(s) for s in signatures):
        raise BadSignature("malformed signature header: v1=<64 hex digits> is needed")
    return int(stamps[0]), signatures


def verify(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = SIGNATURE_TOLERANCE_S,
) -> None:
    """Check a delivery: `header` is its `Surge-Signature`, `body` the raw bytes received,
    `now` the receiver's clock (Unix seconds). Raises `BadSignature` (missing, malformed,
    stale or future timestamp, mismatch); returns None when it is genuine."""
    if not isinstance(header, str) or not header:
        raise BadSignature("no signature header")
    if len(header) > _MAX_HEADER_CHARS or not header.isascii():
        raise BadSignature("malformed signature header")
    timestamp, signatures = _parts(header)
    if timestamp < now - tolerance_s:
        raise BadSignature(f"stale: signed more than {tolerance_s:g}s ago (a replay?)")
    if timestamp > now + tolerance_s:
        raise BadSignature(f"signed more than {tolerance_s:g}s in the future: check the clocks")
    expected = _mac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise BadSignature("signature mismatch: wrong secret, or the body was changed")


def tenant_secret(master: bytes, tenant: str | None) -> bytes:
    """The webhook secret of `tenant` (None: open jobs), derived from the master secret:
    its 64 hex digits, whose ASCII bytes are the HMAC key a receiver uses."""
    name = tenant if tenant is not None else OPEN_JOBS_KEY
    return hmac.new(master, f"surge-webhook/{name}".encode(), hashlib.sha256).hexdigest().encode()


def webhook_key(job_id: str, tenant: str | None) -> str:
    """The `surge-webhooks` key of a job's record: `<tenant or _open>.<job id>`; an id
    with characters a key may not hold goes as `=` + its unpadded base64url."""
    token = job_id
    if not _KV_TOKEN.match(job_id) or job_id.startswith("="):
        token = "=" + base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")
    return f"{tenant if tenant is not None else OPEN_JOBS_KEY}.{token}"


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, in any form a resolver takes (`127.1`,
    `2130706433`, `0x7f.0.0.1`, `::ffff:10.0.0.1`), else None (a name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _internal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    ip = _literal_ip(host)
    if ip is None:
        return False
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )


def webhook_url_problem(url: str, allow_hosts: Iterable[str]) -> str | None:
    """Why `url` may not receive webhooks, or None: http(s) with a host, no user info, at
    most `MAX_WEBHOOK_URL_CHARS`; with `allow_hosts`, a host in it; without, no internal
    address (see the module's note on names)."""
    if len(url) > MAX_WEBHOOK_URL_CHARS:
        return f"a webhook URL is at most {MAX_WEBHOOK_URL_CHARS} characters"
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "a webhook URL is ASCII without spaces or control characters (percent-encode)"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        return "the webhook URL does not parse"
    if parts.scheme not in ("http", "https"):
        return "a webhook URL is http:// or https://"
    if "@" in parts.netloc:
        return "a webhook URL may not carry a user name or password"
    if not host:
        return "the webhook URL names no host"
    allowed = {h.strip().lower().rstrip(".") for h in allow_hosts if h.strip()}
    if allowed:
        if host not in allowed:
            return "the webhook URL's host is not in SURGE_WEBHOOK_ALLOW_HOSTS"
    elif _internal(host):
        return (
            "the webhook URL names an internal address (loopback, private, link-local or "
            "localhost); an operator may allow it in SURGE_WEBHOOK_ALLOW_HOSTS"
        )
    return None


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookRecord(BaseModel):
    """A job's webhook delivery as far as it went, kept in the `surge-webhooks` bucket
    and shown in the job's status."""

    model_config = ConfigDict(extra="ignore")

    url: str
    state: WebhookState
    attempts: int = Field(default=0, description="POSTs made so far.")
    last_status: int | None = Field(default=None, description="HTTP status of the last one.")
    last_error: str = Field(default="", description="Why the last one failed, if it did.")
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
