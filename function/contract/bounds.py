"""Bounds on what a job may carry, checked at parse time, and safe quoting of input.

Every header and envelope field is untrusted. These checks run before anything is
used: a reply subject is a valid publish subject of bounded length outside Surge's own
streams, numbers have bounded size, JSON has bounded nesting. Error messages quote
input only through `quote()`, so an error result never grows with its input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from function.contract.errors import BadInput, ErrorCode
from function.contract.settings import (
    RESERVED_SUBJECT_PREFIXES,
    TENANT_INBOX_MARK,
    Header,
    tenant_inbox_prefix,
)

__all__ = [
    "MAX_CONTENT_TYPE_CHARS",
    "MAX_DEADLINE_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_OUTPUTS",
    "MAX_OUTPUT_NAME_CHARS",
    "MAX_REPLY_SUBJECT_CHARS",
    "check_reply_subject",
    "loads_bounded",
    "message_size",
    "quote",
    "reply_subject_problem",
    "safe_reply_to",
]

MAX_REPLY_SUBJECT_CHARS: Final = 512
MAX_DEADLINE_CHARS: Final = 64
MAX_CONTENT_TYPE_CHARS: Final = 128
MAX_OUTPUTS: Final = 16
MAX_OUTPUT_NAME_CHARS: Final = 64
MAX_JSON_DEPTH: Final = 32
MAX_JSON_NUMBER_CHARS: Final = 32
QUOTE_CHARS: Final = 64

_TOKEN: Final = re.compile(r"^[!-~]+$")  # printable ASCII, no space


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr` of `value`, cut to `limit` characters with the full length noted."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def reply_subject_problem(subject: str, tenant: str | None = None) -> str | None:
    """Why `subject` cannot be replied to, or None when it is a safe publish subject
    (for a tenant's job: one under the tenant's own inbox prefix)."""
    if len(subject) > MAX_REPLY_SUBJECT_CHARS:
        return f"is {len(subject)} characters, limit {MAX_REPLY_SUBJECT_CHARS}"
    if not _TOKEN.match(subject):
        return "must be printable ASCII without white space"
    if "*" in subject or ">" in subject:
        return "must not contain wildcards ('*', '>')"
    if any(not token for token in subject.split(".")):
        return "has an empty token"
    if subject.startswith("$") or subject.startswith(RESERVED_SUBJECT_PREFIXES):
        return "is reserved for Surge or the NATS server"
    if tenant is not None and not subject.startswith(tenant_inbox_prefix(tenant) + "."):
        return f"is outside tenant {tenant}'s inbox {tenant_inbox_prefix(tenant)}.>"
    if tenant is None and subject.startswith(TENANT_INBOX_MARK):
        return "is a tenant's inbox; a tenant's jobs go to its own subjects"
    return None


def check_reply_subject(subject: str, where: str, tenant: str | None = None) -> str:
    """`subject` when it is a safe reply subject; raise `BadInput(bad_envelope)` if not."""
    problem = reply_subject_problem(subject, tenant)
    if problem is not None:
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"{where} {quote(subject)} {problem}")
    return subject


def safe_reply_to(headers: Mapping[str, str] | None, tenant: str | None = None) -> str | None:
    """The `Surge-Reply-To` header when it is safe to publish to, else None."""
    subject = (headers or {}).get(Header.REPLY_TO)
    if not subject or reply_subject_problem(subject, tenant) is not None:
        return None
    return subject


def message_size(body: bytes, headers: Mapping[str, str] | None) -> int:
    """Bytes a message takes against the server's `max_payload`: body plus header block."""
    if not headers:
        return len(body)
    lines = sum(len(k.encode()) + len(v.strip().encode()) + 4 for k, v in headers.items())
    return len(body) + len(b"NATS/1.0\r\n") + lines + 2


def _bounded_number(text: str) -> float | int:
    if len(text) > MAX_JSON_NUMBER_CHARS:
        raise BadInput(
            ErrorCode.BAD_ENVELOPE, f"JSON number of {len(text)} characters is too large"
        )
    return float(text) if any(c in text for c in ".eE") else int(text)


def _no_constant(name: str) -> Any:
    raise BadInput(ErrorCode.BAD_ENVELOPE, f"JSON constant {name} is not allowed")


def _depth(doc: Any) -> int:
    """Nesting depth of a decoded JSON document, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def loads_bounded(data: bytes, what: str) -> Any:
    """`json.loads` with bounded numbers and nesting; raise `BadInput` for anything else."""
    try:
        doc = json.loads(
            data,
            parse_int=_bounded_number,
            parse_float=_bounded_number,
            parse_constant=_no_constant,
        )
    except BadInput:
        raise
    except RecursionError as exc:
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"{what} is nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise BadInput(
            ErrorCode.BAD_ENVELOPE, f"{what} is not valid JSON: {exc.msg} at byte {exc.pos}"
        ) from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(ErrorCode.BAD_ENVELOPE, f"{what} is not valid JSON") from exc
    if _depth(doc) > MAX_JSON_DEPTH:
        raise BadInput(
            ErrorCode.BAD_ENVELOPE, f"{what} is nested deeper than {MAX_JSON_DEPTH} levels"
        )
    return doc
