"""The fuzz generator itself: seeded, bounded, and covering every kind the fault run found."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from function.contract.errors import ErrorCode
from function.contract.settings import Header
from tests.e2e.fuzz_cases import (
    KINDS,
    MAX_HEADERS,
    MAX_PAYLOAD,
    NOT_ANSWERS,
    WIRE_MARGIN,
    Case,
    generate,
    header_size,
    kind_counts,
    wire_size,
)

SEED = 20240909


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return generate(SEED)


def test_same_seed_same_cases_other_seed_other_cases(cases: list[Case]) -> None:
    assert generate(SEED) == cases
    assert generate(SEED + 1) != cases


def test_several_hundred_cases_of_every_kind(cases: list[Case]) -> None:
    counts = kind_counts(cases)
    assert set(counts) == set(KINDS)
    assert 300 <= len(cases) <= 800
    assert min(counts.values()) >= 8


def _key(case: Case) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    return case.kind, case.payload, tuple(sorted(case.headers.items()))


def test_filtering_kinds_keeps_their_cases(cases: list[Case]) -> None:
    kinds = {"reply-long", "json-deep"}
    only = generate(SEED, kinds)
    assert sorted(map(_key, only)) == sorted(_key(c) for c in cases if c.kind in kinds)
    with pytest.raises(ValueError, match="unknown fuzz kinds"):
        generate(SEED, {"no-such-kind"})


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def _encodable(case: Case) -> bool:
    try:
        for key, value in case.headers.items():
            (key + value).encode()
    except UnicodeEncodeError:
        return False
    return True


def test_every_case_fits_on_the_wire(cases: list[Case]) -> None:
    """Bounded: each case reaches the worker (room left for the headers the test adds),
    except the few that nats-py refuses to encode (lone surrogates)."""
    unencodable = [c for c in cases if not _encodable(c)]
    assert len(unencodable) <= 3
    for case in cases:
        assert wire_size(case.headers, case.payload) <= MAX_PAYLOAD - WIRE_MARGIN, case.describe()
        assert header_size(case.headers) <= MAX_HEADERS - WIRE_MARGIN, case.describe()
    assert sum(wire_size(c.headers, c.payload) for c in cases) < 40 * MAX_PAYLOAD


def test_expectations_are_specific(cases: list[Case]) -> None:
    for case in cases:
        assert case.codes, case.describe()
        assert not case.codes & NOT_ANSWERS, case.describe()
        assert ErrorCode.NOT_READY not in case.codes
        assert case.may_succeed == (
            case.kind.startswith("mutate-") or case.kind == "random-headers"
        )


def test_the_fault_runs_exact_inputs_are_there(cases: list[Case]) -> None:
    replies = {c.headers.get(Header.REPLY_TO) for c in cases}
    assert "r." + "x" * 5000 in replies
    assert {"*", ">"} & replies and any(r and ".." in r for r in replies)
    assert any(r and " " in r for r in replies)
    deadlines = {c.headers.get(Header.DEADLINE) for c in cases}
    assert "99999999999999999999" in deadlines and "-1" in deadlines and "tomorrow" in deadlines
    assert any(c.payload.startswith(b'{"image":' + b"[" * 50_000) for c in cases)
    assert any(len(c.payload) > 5000 and c.payload[9:5009].isdigit() for c in cases)
    wildcards = [json.loads(c.payload) for c in cases if c.kind == "envelope-reply-wildcard"]
    assert all("*" in e["reply_to"] or ">" in e["reply_to"] for e in wildcards)
    huge_webp = [c.payload for c in cases if c.kind == "webp-huge"]
    vp8l = next(p for p in huge_webp if p[12:16] == b"VP8L")
    bits = struct.unpack("<I", vp8l[21:25])[0]
    assert (bits & 0x3FFF) + 1 == 16384 and ((bits >> 14) & 0x3FFF) + 1 == 16384
    bad_b64 = [json.loads(c.payload).get("image") for c in cases if c.kind == "bad-base64"]
    assert bad_b64 and not any(map(_is_base64, filter(None, bad_b64)))
    assert {c.payload for c in cases if c.kind == "empty-payload"} == {b""}
    assert any(len(c.headers.get(Header.OUTPUTS, "")) > 40_000 for c in cases)
    assert any(len(c.headers.get(Header.MSG_ID, "")) > 60_000 for c in cases)
    near = [wire_size(c.headers, c.payload) for c in cases if c.kind == "echo-near-max"]
    assert min(near) > MAX_PAYLOAD - 2_000
