"""Parse-time bounds: reply subjects, quoting, JSON nesting and numbers, wire sizes."""

from __future__ import annotations

import json

import pytest

from function.contract.bounds import (
    MAX_REPLY_SUBJECT_CHARS,
    loads_bounded,
    message_size,
    quote,
    reply_subject_problem,
    safe_reply_to,
)
from function.contract.errors import MAX_MESSAGE_CHARS, BadInput, ErrorCode, JobError
from function.contract.parse import parse_job
from function.contract.settings import Header
from function.contract.wire import ErrorInfo
from tests.helpers import png_bytes

SUBJECT = "surge.jobs.normal.tiny"


@pytest.mark.parametrize(
    "subject",
    ["_INBOX.abc.def", "replies.client-7", "a", "x" * MAX_REPLY_SUBJECT_CHARS],
)
def test_safe_reply_subjects_pass(subject: str) -> None:
    assert reply_subject_problem(subject) is None


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("r." + "x" * 5000, "characters"),
        ("a b", "white space"),
        ("a\tb", "white space"),
        ("a.*", "wildcards"),
        ("a.>", "wildcards"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("surge.results.someone-elses-job", "reserved"),
        ("surge.jobs.high.tiny", "reserved"),
        ("surge.heartbeat.tiny", "reserved"),
        ("$JS.API.STREAM.DELETE.SURGE_JOBS", "reserved"),
        ("caf\u00e9", "ASCII"),
    ],
)
def test_unsafe_reply_subjects_are_refused(subject: str, why: str) -> None:
    problem = reply_subject_problem(subject)
    assert problem is not None and why in problem
    assert safe_reply_to({Header.REPLY_TO: subject}) is None


def test_quote_is_bounded() -> None:
    assert quote("short") == "'short'"
    quoted = quote("x" * 100_000)
    assert len(quoted) < 120 and "100000 characters" in quoted


def test_job_error_and_error_info_messages_are_bounded() -> None:
    assert len(JobError(ErrorCode.BAD_IMAGE, "x" * 50_000).message) == MAX_MESSAGE_CHARS
    info = ErrorInfo(code=ErrorCode.BAD_IMAGE, message="y" * 50_000)
    assert len(info.message) == MAX_MESSAGE_CHARS


def test_deep_json_is_bad_input_not_recursion_error() -> None:
    with pytest.raises(BadInput, match="nested"):
        loads_bounded(b"[" * 50_000 + b"]" * 50_000, "payload")
    with pytest.raises(BadInput, match="deeper"):
        loads_bounded(b"[" * 40 + b"]" * 40, "payload")


def test_huge_json_numbers_are_bad_input() -> None:
    with pytest.raises(BadInput, match="number"):
        loads_bounded(b'{"a": ' + b"9" * 5000 + b"}", "payload")
    with pytest.raises(BadInput, match="constant"):
        loads_bounded(b'{"a": NaN}', "payload")
    assert loads_bounded(b'{"a": 1.5, "b": [1, 2]}', "payload") == {"a": 1.5, "b": [1, 2]}


def test_message_size_counts_the_header_block() -> None:
    assert message_size(b"abc", None) == 3
    # NATS/1.0\r\n + "Key: value\r\n" + \r\n
    assert message_size(b"abc", {"Key": "value"}) == 3 + 10 + 12 + 2


def _parse(headers: dict[str, str], data: bytes | None = None) -> None:
    parse_job(SUBJECT, headers, data if data is not None else png_bytes(), stream="S", sequence=1)


@pytest.mark.parametrize(
    "headers",
    [
        {Header.DEADLINE: "99999999999999999999"},
        {Header.DEADLINE: "9" * 400},
        {Header.DEADLINE: "inf"},
        {Header.DEADLINE: "tomorrow"},
        {Header.DEADLINE: "\u0663" * 30},  # Arabic-Indic digits pass str.isdigit()
        {Header.REPLY_TO: "r." + "x" * 5000},
        {Header.REPLY_TO: "a b"},
        {Header.OUTPUTS: ",".join(["mask"] * 100)},
        {Header.OUTPUTS: "m" * 500},
        {Header.CONTENT_TYPE: "image/png;" + "x" * 1000},
        {Header.MSG_ID: "id\x00with-control"},
    ],
)
def test_hostile_headers_are_bad_envelope(headers: dict[str, str]) -> None:
    with pytest.raises(BadInput) as caught:
        _parse(headers)
    assert caught.value.code is ErrorCode.BAD_ENVELOPE
    assert len(caught.value.message) < 400  # never echoes the input whole


@pytest.mark.parametrize(
    "envelope",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"image": "aGVsbG8=", "n": ' + b"7" * 5000 + b"}",
        json.dumps({"image": "aGVsbG8=", "reply_to": "r." + "x" * 5000}).encode(),
        json.dumps({"image": "aGVsbG8=", "reply_to": "a b"}).encode(),
        json.dumps({"image": "aGVsbG8=", "outputs": ["m"] * 100}).encode(),
        json.dumps({"image": "aGVsbG8=", "job_id": "j" * 10_000}).encode(),
        json.dumps({"image": "aGVsbG8=", "function": "f" * 10_000}).encode(),
    ],
)
def test_hostile_envelopes_are_bad_envelope(envelope: bytes) -> None:
    with pytest.raises(BadInput) as caught:
        _parse({Header.CONTENT_TYPE: "application/json"}, envelope)
    assert caught.value.code is ErrorCode.BAD_ENVELOPE
    assert len(caught.value.message) < 400


def test_long_job_id_is_not_echoed() -> None:
    with pytest.raises(BadInput) as caught:
        _parse({Header.MSG_ID: "a.b" + "x" * 600_000})
    assert len(caught.value.message) < 400
