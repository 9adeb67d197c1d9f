"""Parsing job messages into JobRequests: every format and every malformed input."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from function.contract.errors import BadInput, ErrorCode
from function.contract.parse import (
    derive_job_id,
    is_valid_job_id,
    job_headers,
    parse_job,
    parse_subject,
    sniff_image_type,
)
from function.contract.settings import Header, Priority
from function.contract.wire import ImageOutput, Result

SUBJECT = "surge.jobs.high.remove-bg"
PNG = b"\x89PNG\r\n\x1a\n" + b"rest"


def test_subject_parts() -> None:
    assert parse_subject(SUBJECT) == (Priority.HIGH, "remove-bg", None)
    assert parse_subject(SUBJECT + ".acme") == (Priority.HIGH, "remove-bg", "acme")
    for bad in (
        "surge.jobs.urgent.remove-bg",
        "surge.jobs.high",
        "other.high.x",
        "surge.jobs.high.remove-bg.Acme",  # tenant ids are lower case
        "surge.jobs.high.remove-bg.acme.x",
    ):
        with pytest.raises(BadInput) as info:
            parse_subject(bad)
        assert info.value.code is ErrorCode.BAD_ENVELOPE


def test_raw_bytes_with_headers() -> None:
    headers = {
        Header.MSG_ID: "job-1",
        Header.CONTENT_TYPE: "image/png; charset=binary",
        Header.REPLY_TO: "_INBOX.x",
        Header.DEADLINE: "1700000000",
        Header.OUTPUTS: "mask, cutout",
    }
    job = parse_job(SUBJECT, headers, PNG)
    assert job.job_id == "job-1"
    assert job.priority is Priority.HIGH and job.function == "remove-bg"
    assert job.content_type == "image/png"
    assert job.reply_to == "_INBOX.x"
    assert job.deadline == datetime.fromtimestamp(1700000000, UTC)
    assert job.outputs == ("mask", "cutout")
    assert job.image == PNG


def test_job_id_derived_from_stream_sequence_when_absent() -> None:
    job = parse_job(SUBJECT, {}, PNG, stream="SURGE_JOBS", sequence=42)
    assert job.job_id == derive_job_id("SURGE_JOBS", 42)
    assert job.job_id == parse_job(SUBJECT, None, PNG, stream="SURGE_JOBS", sequence=42).job_id


def test_json_envelope() -> None:
    body = {"image": base64.b64encode(PNG).decode(), "job_id": "e1", "outputs": ["cutout"]}
    job = parse_job(SUBJECT, {Header.CONTENT_TYPE: "application/json"}, json.dumps(body).encode())
    assert (job.job_id, job.image, job.outputs) == ("e1", PNG, ("cutout",))


def test_header_job_id_wins_over_envelope() -> None:
    body = {"image_ref": "inputs/x", "job_id": "from-body"}
    job = parse_job(SUBJECT, {Header.MSG_ID: "from-header"}, json.dumps(body).encode())
    assert job.job_id == "from-header"
    assert job.image_ref == "inputs/x" and job.image is None


def test_cloudevent_structured_with_envelope_data() -> None:
    event = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/campaign",
        "type": "dev.surge.job",
        "data": {"image": base64.b64encode(PNG).decode()},
    }
    job = parse_job(SUBJECT, {}, json.dumps(event).encode())
    assert job.job_id == "ce-1" and job.image == PNG


def test_cloudevent_binary_mode() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "ce-bin",
        "ce-source": "s",
        "ce-type": "t",
        Header.CONTENT_TYPE: "image/png",
    }
    job = parse_job(SUBJECT, headers, PNG)
    assert job.job_id == "ce-bin" and job.content_type == "image/png" and job.image == PNG


@pytest.mark.parametrize(
    ("headers", "data", "code"),
    [
        ({Header.CONTENT_TYPE: "application/json"}, b"{not json", ErrorCode.BAD_ENVELOPE),
        ({}, json.dumps({"image": "!!notbase64!!"}).encode(), ErrorCode.BAD_ENVELOPE),
        ({}, json.dumps({}).encode(), ErrorCode.BAD_ENVELOPE),
        ({}, json.dumps({"image": "aGk=", "image_ref": "x"}).encode(), ErrorCode.BAD_ENVELOPE),
        ({}, json.dumps({"specversion": "1.0"}).encode(), ErrorCode.BAD_ENVELOPE),
        (
            {},
            json.dumps({"function": "nsfw", "image": "aGk="}).encode(),
            ErrorCode.UNKNOWN_FUNCTION,
        ),
        ({Header.DEADLINE: "tomorrow"}, PNG, ErrorCode.BAD_ENVELOPE),
        ({Header.MSG_ID: "has.dots"}, PNG, ErrorCode.BAD_ENVELOPE),
        ({}, b"", ErrorCode.BAD_IMAGE),
    ],
    ids=[
        "bad-json",
        "bad-base64",
        "no-image",
        "two-images",
        "incomplete-cloudevent",
        "other-function",
        "bad-deadline",
        "bad-job-id",
        "empty",
    ],
)
def test_malformed_messages(headers: dict[str, str], data: bytes, code: ErrorCode) -> None:
    with pytest.raises(BadInput) as info:
        parse_job(SUBJECT, headers, data)
    assert info.value.code is code
    assert info.value.message


def test_payload_limit() -> None:
    with pytest.raises(BadInput) as info:
        parse_job(SUBJECT, {}, PNG, max_payload=4)
    assert info.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_sniffing_and_ids() -> None:
    assert sniff_image_type(PNG) == "image/png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image_type(b"GIF89a") is None
    assert is_valid_job_id("a-b_c:1") and not is_valid_job_id("a b") and not is_valid_job_id("")


def test_result_round_trips_and_tolerates_unknown_fields() -> None:
    result = Result.model_validate(
        {
            "job_id": "j",
            "status": "ok",
            "function": "remove-bg",
            "outputs": {"mask": {"kind": "image", "width": 1, "height": 1, "data": "aGk="}},
            "from_the_future": True,
        }
    )
    again = Result.model_validate_json(result.model_dump_json())
    assert again == result
    mask = again.outputs["mask"]
    assert isinstance(mask, ImageOutput) and mask.payload() == b"hi"


def test_a_tenant_job_carries_its_tenant_and_msg_id_scope() -> None:
    headers = job_headers("order-1", reply_to="_INBOX_acme.x", tenant="acme")
    assert headers[Header.MSG_ID] == "acme:order-1"
    job = parse_job(SUBJECT + ".acme", headers, PNG)
    assert (job.tenant, job.job_id, job.reply_to) == ("acme", "order-1", "_INBOX_acme.x")


@pytest.mark.parametrize(
    "reply_to", ["_INBOX.x", "_INBOX_other.x", "_INBOX_acmex.y", "replies.acme"]
)
def test_a_tenant_job_replies_only_under_its_inbox(reply_to: str) -> None:
    with pytest.raises(BadInput, match="outside tenant acme's inbox") as info:
        parse_job(SUBJECT + ".acme", {Header.REPLY_TO: reply_to}, PNG)
    assert info.value.code is ErrorCode.BAD_ENVELOPE


@pytest.mark.parametrize("ref", ["inputs/x", "tenants/other/x", "tenants/acme/../other/x"])
def test_a_tenant_job_reads_only_its_blobs(ref: str) -> None:
    envelope = json.dumps({"image_ref": ref}).encode()
    with pytest.raises(BadInput, match="outside tenant acme") as info:
        parse_job(SUBJECT + ".acme", {Header.CONTENT_TYPE: "application/json"}, envelope)
    assert info.value.code is ErrorCode.BAD_ENVELOPE
