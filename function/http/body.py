"""A request's input: the body read within its limit, a multipart upload, and the image
type taken from the bytes.

    raw body     `--data-binary @photo.jpg`, whatever `Content-Type` it came with
    multipart    `-F image=@photo.jpg`: exactly one file part, under any field name
    JSON         `application/json` (a `JobEnvelope`) or CloudEvents, passed on unread

The bytes decide an image's type: PNG, JPEG and WebP are recognised by their magic bytes
whatever was declared (curl sends `application/x-www-form-urlencoded` with
`--data-binary`). A body that is not one of them keeps its declared type, less the
generic ones (form, octet-stream, text), so decoding names the real problem. Multipart is
parsed by python-multipart, in memory (the body is within its limit), with bounded parts,
fields and headers; a malformed one is 400 `bad_image`, a body over the limit 413
`payload_too_large`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from function.contract.bounds import quote
from function.contract.errors import BadInput, ErrorCode, SurgeError
from function.contract.parse import CLOUDEVENTS_JSON, sniff_image_type

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "MAX_FORM_FIELD_BYTES",
    "MAX_FORM_PARTS",
    "MAX_PART_HEADER_BYTES",
    "Upload",
    "image_type",
    "read_upload",
]

MAX_FORM_PARTS: Final = 16
"""Parts of a multipart body: its one file and text fields (which are ignored)."""
MAX_FORM_FIELD_BYTES: Final = 16 * 1024
"""The largest text field of a multipart body."""
MAX_PART_HEADER_BYTES: Final = 8 * 1024
"""The most header bytes one part may carry."""
_GENERIC_TYPES: Final = frozenset(
    {"application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)
_MULTIPART: Final = "multipart/form-data"

# python-multipart logs a warning for each malformed body: a client could write to our
# logs at will. The request's own error result says what was wrong.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Upload:
    """The input bytes and the content type to parse them as (None: let the bytes say)."""

    data: bytes
    content_type: str | None


def _media(content_type: str | None) -> str | None:
    media = content_type.split(";")[0].strip().lower() if content_type else ""
    return media or None


def _is_json(media: str) -> bool:
    return media in ("application/json", CLOUDEVENTS_JSON) or media.endswith("+json")


def image_type(declared: str | None, data: bytes) -> str | None:
    """The content type `data` is parsed as: JSON stays JSON; bytes that are a PNG, JPEG
    or WebP are that, whatever was declared; otherwise the declared type, or None when it
    was generic (so a `{...}` body is read as an envelope and anything else as an image)."""
    media = _media(declared)
    if media is not None and _is_json(media):
        return declared
    sniffed = sniff_image_type(data)
    if sniffed is not None:
        return sniffed
    return None if media is None or media in _GENERIC_TYPES else declared


async def _bounded(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refusing (413) as soon as it is known to be over `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(ErrorCode.PAYLOAD_TOO_LARGE, f"body is {declared} bytes, limit {limit}")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(ErrorCode.PAYLOAD_TOO_LARGE, f"body is over the limit of {limit} bytes")
        yield chunk


def _malformed(problem: str) -> BadInput:
    return BadInput(
        ErrorCode.BAD_IMAGE,
        f"malformed multipart body: {problem}; send one image, e.g. curl -F image=@photo.jpg",
    )


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_bytes: int = 0
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


@dataclass
class _Parts:
    """python-multipart's callbacks: the parts collected, each limit checked as it passes."""

    parts: list[_Part] = field(default_factory=list)
    name: bytes = b""
    value: bytes = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
        }

    def begin(self) -> None:
        if len(self.parts) == MAX_FORM_PARTS:
            raise _malformed(f"more than {MAX_FORM_PARTS} parts")
        self.parts.append(_Part())

    def _count(self, size: int) -> None:
        part = self.parts[-1]
        part.header_bytes += size
        if part.header_bytes > MAX_PART_HEADER_BYTES:
            raise _malformed(f"a part has over {MAX_PART_HEADER_BYTES} bytes of headers")

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self.value += data[start:end]

    def header_end(self) -> None:
        self.parts[-1].headers[self.name.strip().lower()] = self.value.strip()
        self.name = self.value = b""

    def headers_finished(self) -> None:
        part = self.parts[-1]
        _, options = parse_options_header(part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise _malformed('a part has no Content-Disposition "name"')
        part.is_file = b"filename" in options
        if part.is_file and sum(p.is_file for p in self.parts) > 1:
            raise _malformed("more than one file")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        part.data += data[start:end]
        if not part.is_file and len(part.data) > MAX_FORM_FIELD_BYTES:
            raise _malformed(f"a text field is over {MAX_FORM_FIELD_BYTES} bytes")


async def _one_file(request: Request, limit: int) -> Upload:
    """The one file part of a multipart body; 400 for anything else."""
    _, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise _malformed("no boundary in its Content-Type")
    collected = _Parts()
    try:
        parser = MultipartParser(boundary, collected.callbacks())
        async for chunk in _bounded(request, limit):
            parser.write(chunk)
        parser.finalize()
    except (SurgeError, MemoryError):
        raise
    except FormParserError as exc:
        raise _malformed(quote(exc, 120)) from exc
    except Exception as exc:  # whatever the parser trips on is the input's fault
        raise _malformed(type(exc).__name__) from exc
    if parser.state != MultipartState.END:
        raise _malformed("it ends before its closing boundary")
    files = [part for part in collected.parts if part.is_file]
    if not files:
        raise _malformed("no file part")
    data = bytes(files[0].data)
    declared = files[0].headers.get(b"content-type", b"").decode("latin-1") or None
    return Upload(data, image_type(declared, data))


async def read_upload(request: Request, limit: int) -> Upload:
    """The request's input within `limit` bytes: a multipart upload's file, else the body."""
    declared = request.headers.get("content-type")
    if _media(declared) == _MULTIPART:
        return await _one_file(request, limit)
    data = b"".join([chunk async for chunk in _bounded(request, limit)])
    return Upload(data, image_type(declared, data))
