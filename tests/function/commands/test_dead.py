"""`surge dead`'s lines and documents: one line a letter, payloads never printed."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from function.commands.dead import describe, document
from function.contract.errors import ErrorCode
from function.contract.wire import DeadLetter, ErrorInfo
from function.transport.deadletters import DeadEntry


def _entry(message: str, **fields: object) -> DeadEntry:
    letter = DeadLetter.model_validate(
        {
            "job_id": "j1",
            "function": "tiny",
            "tenant": "acme",
            "original_subject": "surge.jobs.normal.tiny.acme",
            "attempts": 5,
            "last_error": ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message=message),
            "payload_b64": base64.b64encode(b"x" * 300).decode(),
            "payload_bytes": 300,
            **fields,
        }
    )
    return DeadEntry(7, letter, datetime.now(UTC) - timedelta(minutes=5))


def test_a_letter_is_one_line_whatever_its_error_message_holds() -> None:
    line = describe(_entry("Reshape failed:\n\tinput {1,1,8,8}\n" + "x" * 500))
    assert "\n" not in line
    fields = line.split("\t")
    assert fields[:4] == ["j1", "tiny", "acme", "5 attempt(s)"]
    assert fields[4].startswith("inference_failed: Reshape failed: input {1,1,8,8} xxx")
    assert len(fields[4]) < 240 and fields[4].endswith("\u2026")
    assert fields[5:] == ["300 bytes", "dead-lettered 5 min ago"]


def test_a_dropped_payload_says_so_and_a_document_never_holds_a_payload() -> None:
    dropped = _entry("boom", payload_b64="", payload_dropped=True, payload_bytes=2_000_000)
    assert describe(dropped).split("\t")[5] == "payload dropped"
    doc = document(_entry("boom"))
    assert doc["payload_b64"] == "<300 bytes, elided>" and doc["sequence"] == 7
    assert doc["dead_lettered_at"].endswith("+00:00")
    assert document(dropped)["payload_b64"] == ""
