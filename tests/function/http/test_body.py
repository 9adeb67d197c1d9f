"""Reading a request's input (`function.http.body`) and choosing the answer's form
(`function.http.negotiate`): unit tests on real Starlette requests, plus seeded fuzzing of
the multipart and sniffing path."""

from __future__ import annotations

import itertools
import random
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from function.contract.errors import BadInput, ErrorCode
from function.contract.parse import sniff_image_type
from function.contract.wire import ImageOutput, JobStatus, Result, ScoresOutput
from function.http.body import (
    MAX_FORM_FIELD_BYTES,
    MAX_FORM_PARTS,
    MAX_PART_HEADER_BYTES,
    Upload,
    image_type,
    read_upload,
)
from function.http.negotiate import NotAcceptable, pick_image, wants_image
from tests.helpers import gif_bytes, png_bytes

PNG = png_bytes()
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(64))
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8)
LIMIT = 64 * 1024
FORM = "application/x-www-form-urlencoded"
_BOUNDARY_B = "multipart/form-data; boundary=b"
_TEST_BOUNDARY = "multipart/form-data; boundary=surge-test-boundary"
_FIELD_ONLY = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nnot a file\r\n--b--\r\n'


def _request(body: bytes, content_type: str | None, pieces: int = 1) -> Request:
    """A real Starlette request whose body arrives in `pieces` chunks."""
    cut = sorted({len(body) * i // pieces for i in range(pieces + 1)})
    chunks = [body[a:b] for a, b in itertools.pairwise(cut)] or [b""]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive)


def _multipart(
    files: dict[str, tuple[str, bytes, str]], data: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A multipart body as httpx (what a client sends) encodes it, and its content type."""
    request = httpx.Request(
        "POST",
        "http://surge/",
        files=files,
        data=data,
        headers={"content-type": _TEST_BOUNDARY},
    )
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize(
    ("declared", "data", "want"),
    [
        (FORM, JPEG, "image/jpeg"),  # curl --data-binary @photo.jpg
        ("application/octet-stream", PNG, "image/png"),
        (None, WEBP, "image/webp"),
        ("image/jpg", JPEG, "image/jpeg"),  # a common misspelling
        ("image/png", JPEG, "image/jpeg"),  # the bytes win
        ("text/plain; charset=utf-8", PNG, "image/png"),
        ("application/json", PNG, "application/json"),  # JSON stays JSON
        ("application/cloudevents+json", b"{}", "application/cloudevents+json"),
        (FORM, b'{"image": "x"}', None),  # read as an envelope
        ("application/octet-stream", b"garbage", None),  # decoding names the problem
        ("image/gif", gif_bytes(), "image/gif"),  # an unsupported image keeps its type (415)
        ("text/html", b"<html>", "text/html"),
    ],
)
def test_the_bytes_decide_an_images_type(declared: str | None, data: bytes, want: str) -> None:
    assert image_type(declared, data) == want


@pytest.mark.parametrize("pieces", [1, 3, 200])
async def test_raw_and_multipart_bodies_give_the_image_bytes(pieces: int) -> None:
    raw = await read_upload(_request(JPEG, FORM, pieces), LIMIT)
    assert (raw.data, raw.content_type) == (JPEG, "image/jpeg")
    body, content_type = _multipart(
        {"photo": ("p.png", PNG, "application/octet-stream")}, {"note": "hello"}
    )
    upload = await read_upload(_request(body, content_type, pieces), LIMIT)
    assert (upload.data, upload.content_type) == (PNG, "image/png")


@pytest.mark.parametrize(
    ("body", "content_type", "problem"),
    [
        (
            *_multipart({"a": ("a.png", PNG, "image/png"), "b": ("b.png", PNG, "image/png")}),
            "more than one file",
        ),
        (_FIELD_ONLY, _BOUNDARY_B, "no file part"),
        (PNG, "multipart/form-data", "no boundary"),
        (
            *_multipart(
                {"image": ("a.png", PNG, "image/png")},
                {f"f{i}": "x" for i in range(MAX_FORM_PARTS)},
            ),
            f"more than {MAX_FORM_PARTS} parts",
        ),
        (
            *_multipart(
                {"image": ("a.png", PNG, "image/png")}, {"big": "x" * (MAX_FORM_FIELD_BYTES + 1)}
            ),
            "a text field is over",
        ),
        (
            b"--b\r\n"  # header lines under python-multipart's own limit, adding up past ours
            + (b"X-Junk: " + b"j" * 3000 + b"\r\n") * (MAX_PART_HEADER_BYTES // 3000 + 1)
            + b"\r\nx\r\n--b--\r\n",
            _BOUNDARY_B,
            "bytes of headers",
        ),
        (
            b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
            _BOUNDARY_B,
            'no Content-Disposition "name"',
        ),
        (b"--b\r\n\x00\x01\x02 not a header\r\n", _BOUNDARY_B, "invalid character"),
        (
            _multipart({"image": ("a.png", PNG, "image/png")})[0][:-40],
            _TEST_BOUNDARY,
            "ends before",
        ),
        (PNG, "multipart/form-data; boundary=" + "b" * 300, "Boundary length"),
    ],
    ids=[
        "two-files",
        "no-file",
        "no-boundary",
        "many-parts",
        "big-field",
        "big-headers",
        "no-name",
        "junk",
        "truncated",
        "long-boundary",
    ],
)
async def test_a_malformed_multipart_body_is_a_clear_400(
    body: bytes, content_type: str, problem: str
) -> None:
    with pytest.raises(BadInput) as refused:
        await read_upload(_request(body, content_type), LIMIT)
    assert refused.value.code is ErrorCode.BAD_IMAGE
    assert refused.value.message.startswith("malformed multipart body")
    assert problem in refused.value.message and "curl -F image=@photo.jpg" in refused.value.message


async def test_a_body_over_the_limit_is_refused_whatever_its_form() -> None:
    big = PNG + bytes(LIMIT)
    body, content_type = _multipart({"image": ("big.png", big, "image/png")})
    for data, declared in ((big, FORM), (body, content_type)):
        with pytest.raises(BadInput) as refused:
            await read_upload(_request(data, declared, pieces=16), LIMIT)
        assert refused.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def _mutate(rng: random.Random, body: bytes) -> bytes:
    """`body` flipped, cut, spliced or salted with boundaries and CRLFs."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        match rng.randrange(5):
            case 0 if data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            case 1:
                del data[at:]
            case 2:
                data[at:at] = rng.choice(
                    [b"\r\n", b"--surge-test-boundary", b"--surge-test-boundary--\r\n", b'"']
                )
            case 3:
                data[at:at] = b"Content-Disposition: form-data; name=x; filename=y\r\n\r\n"
            case _:
                data[at:at] = rng.randbytes(rng.randint(1, 32))
    return bytes(data)


async def _outcome(request: Request, limit: int) -> Upload | BadInput:
    """The upload, or the `BadInput` it was refused with (any other exception fails)."""
    try:
        return await read_upload(request, limit)
    except BadInput as exc:
        return exc


async def test_fuzzed_uploads_give_bytes_or_a_clear_error_never_a_crash() -> None:
    rng = random.Random(1313)
    seeds = [
        _multipart({"image": ("a.png", PNG, "image/png")}),
        _multipart({"upload": ("a.jpg", JPEG, "application/octet-stream")}, {"note": "n"}),
    ]
    content_types = [
        None,
        FORM,
        "application/octet-stream",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=other",
        'multipart/form-data; boundary="surge-test-boundary"; charset=x-unknown',
        "image/png",
    ]
    outcomes: dict[str, int] = {}
    for _ in range(400):
        body, content_type = rng.choice(seeds)
        if rng.random() < 0.8:
            body = _mutate(rng, body)
        if rng.random() < 0.3:
            content_type = rng.choice(content_types) or ""
        got = await _outcome(_request(body, content_type or None, rng.randint(1, 9)), 2048)
        if isinstance(got, BadInput):
            assert got.code in (ErrorCode.BAD_IMAGE, ErrorCode.PAYLOAD_TOO_LARGE), got
            assert len(got.message) < 300
            outcomes[got.code.value] = outcomes.get(got.code.value, 0) + 1
        else:
            assert len(got.data) <= 2048
            sniffed = sniff_image_type(got.data)
            assert sniffed is None or got.content_type == sniffed
            outcomes["read"] = outcomes.get("read", 0) + 1
    assert outcomes.get("read", 0) > 20 and outcomes.get("bad_image", 0) > 20, outcomes


@pytest.mark.parametrize(
    ("accept", "image"),
    [
        (None, False),
        ("*/*", False),  # curl's default
        ("application/json", False),
        ("image/png", True),
        ("image/*", True),
        ("image/png, application/json", False),  # a tie keeps JSON
        ("application/json;q=0.5, image/png", True),
        ("image/png;q=0.1, */*;q=0.9", False),  # */* covers JSON at 0.9
        ("IMAGE/PNG", True),
        ("image/png;q=junk", False),
        ("text/html", False),
    ],
)
def test_an_image_is_sent_only_when_rated_above_json(accept: str | None, image: bool) -> None:
    assert wants_image(accept) is image


def test_the_image_sent_is_the_one_asked_for_else_the_first() -> None:
    mask = ImageOutput(width=1, height=1, data="AA==")
    cutout = ImageOutput(width=1, height=1, data="AQ==")
    result = Result(
        job_id="j",
        status=JobStatus.OK,
        function="remove-bg",
        outputs={"mask": mask, "cutout": cutout},
    )
    assert pick_image(result, None) == ("mask", mask)
    assert pick_image(result, "cutout, mask") == ("cutout", cutout)
    scores = result.model_copy(
        update={"function": "nsfw", "outputs": {"s": ScoresOutput(scores={})}}
    )
    with pytest.raises(NotAcceptable, match="nsfw has no image output"):
        pick_image(scores, None)
    with pytest.raises(NotAcceptable, match="no image among outputs s"):
        pick_image(scores, "s")
