"""A seeded, bounded generator of malformed job messages (`Case(kind, headers, payload)`).

Every kind of hostile input an earlier fault run found is here, each with the error codes
an answer may carry, plus seeded random byte mutations of valid images and envelopes and
random header values. The same seed always gives the same cases (Pillow's encoders are
deterministic for a given version); sizes are bounded so that every case fits the test
server's `max_payload` on the wire, headers included, unless it is meant to be refused by
the client.

    cases = generate(seed=1234)                 # ~550 cases
    cases = generate(seed=1234, kinds={"reply-long"})
"""

from __future__ import annotations

import base64
import io
import json
import random
import string
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from PIL import Image

from function.contract.errors import ErrorCode
from function.contract.settings import Header

__all__ = [
    "ANY_BAD_INPUT",
    "KINDS",
    "MAX_PAYLOAD",
    "Case",
    "generate",
    "header_size",
    "kind_counts",
    "wire_headers",
    "wire_size",
]

MAX_PAYLOAD = 1024 * 1024  # the test server's max_payload (tests/conftest.py)
MAX_HEADERS = 65_535  # JetStream refuses a larger header block (err_code 10097)
WIRE_MARGIN = 128  # room left for the Nats-Msg-Id and Surge-Reply-To the test adds
NOT_ANSWERS = frozenset(
    {
        ErrorCode.MAX_DELIVER_EXCEEDED,
        ErrorCode.INFERENCE_FAILED,
        ErrorCode.UNAUTHORIZED,  # HTTP only
        ErrorCode.FORBIDDEN,
    }
)
ANY_BAD_INPUT = frozenset(ErrorCode) - NOT_ANSWERS - {ErrorCode.NOT_READY}

E = ErrorCode
ENVELOPE = frozenset({E.BAD_ENVELOPE})
DEADLINE = frozenset({E.BAD_ENVELOPE, E.DEADLINE_EXCEEDED})
PIXELS = frozenset({E.TOO_MANY_PIXELS, E.BAD_IMAGE})
SUBJECT_ODD = frozenset({E.UNKNOWN_FUNCTION, E.BAD_ENVELOPE})
REF = frozenset({E.INPUT_NOT_FOUND, E.BAD_ENVELOPE})
JSON_CT = {Header.CONTENT_TYPE: "application/json"}
CE_CT = {Header.CONTENT_TYPE: "application/cloudevents+json"}


@dataclass(frozen=True)
class Case:
    """One message: its kind, the headers it sets itself, its payload and what may answer it.

    The test adds a unique `Nats-Msg-Id` when the case sets none and `msg_id` is true, and
    `Surge-Reply-To` (its inbox) when the case sets none and `reply` is true.
    """

    kind: str
    headers: dict[str, str]
    payload: bytes
    codes: frozenset[ErrorCode] = ENVELOPE
    may_succeed: bool = False  # a random mutation may leave a valid job
    reply: bool = True  # False: the reply subject is the case's own (e.g. in its envelope)
    note: str = ""
    msg_id: bool = True  # False: no Nats-Msg-Id, the job id is derived (or the envelope's)

    def describe(self) -> str:
        return f"{self.kind}[{self.note}]" if self.note else self.kind


_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def wire_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers as the receiver sees them (nats-py trims values, turns CR/LF into spaces)."""
    return {k.strip(): v.strip().translate(_NEWLINES) for k, v in headers.items() if k.strip()}


def header_size(headers: Mapping[str, str]) -> int:
    """Bytes of the header block on the wire."""
    size = len(b"NATS/1.0\r\n\r\n")
    for key, value in wire_headers(headers).items():
        size += len(key.encode()) + 2 + len(value.encode("utf-8", "surrogatepass")) + 2
    return size


def wire_size(headers: Mapping[str, str], payload: bytes) -> int:
    """Bytes the server counts against `max_payload`: the header block plus the payload."""
    return header_size(headers) + len(payload)


# -- valid inputs to break ---------------------------------------------------------------------


def _noise(rng: random.Random, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * channels))


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@dataclass
class _Inputs:
    png: bytes
    small_png: bytes
    pngs: list[bytes]
    jpegs: list[bytes]
    webps: list[bytes]
    webp_lossy: bytes
    webp_lossless: bytes
    others: list[tuple[str, bytes]]

    @classmethod
    def build(cls, rng: random.Random) -> _Inputs:
        rgb = _noise(rng, (24, 24))
        rgba = _noise(rng, (20, 12), "RGBA")
        grey = _noise(rng, (16, 16), "L")
        pngs = [
            _encode(rgb, "PNG"),
            _encode(rgba, "PNG"),
            _encode(grey.convert("P"), "PNG"),
            _encode(grey, "PNG", compress_level=0),
        ]
        jpegs = [
            _encode(rgb, "JPEG", quality=85),
            _encode(rgb, "JPEG", quality=60, progressive=True),
            _encode(grey, "JPEG"),
        ]
        lossy = _encode(rgb, "WEBP", quality=80)
        lossless = _encode(rgb, "WEBP", lossless=True)
        webps = [lossy, lossless, _encode(rgba, "WEBP", lossless=True)]
        others = [
            ("gif", _encode(rgb, "GIF")),
            ("gif87", b"GIF87a" + _encode(rgb, "GIF")[6:]),
            ("bmp", _encode(rgb, "BMP")),
            ("tiff", _encode(rgb, "TIFF")),
            ("ico", _encode(rgb, "ICO")),
        ]
        small = _encode(_noise(rng, (2, 2)), "PNG")
        return cls(pngs[0], small, pngs, jpegs, webps, lossy, lossless, others)


def _decodes(data: bytes) -> bool:
    """Whether Pillow fully decodes `data` (the oracle for 'undecodable' cases)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        return True
    except Exception:
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _envelope(inputs: _Inputs, **fields: object) -> bytes:
    return _json({"image": _b64(inputs.png), **fields})


# -- WebP headers that claim a huge canvas -------------------------------------------------------


def _riff(chunks: Iterable[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP"
    for fourcc, data in chunks:
        body += fourcc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size % 2)
    return chunks


def _vp8l_sized(chunk: bytes, width: int, height: int) -> bytes:
    bits = struct.unpack("<I", chunk[1:5])[0]
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    return chunk[:1] + struct.pack("<I", bits) + chunk[5:]


def _vp8_sized(chunk: bytes, width: int, height: int) -> bytes:
    return chunk[:6] + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF) + chunk[10:]


def _vp8x(width: int, height: int, flags: int = 0) -> tuple[bytes, bytes]:
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"VP8X", bytes([flags, 0, 0, 0]) + dims


def _huge_webps(inputs: _Inputs) -> list[tuple[str, bytes]]:
    lossless = dict(_webp_chunks(inputs.webp_lossless))[b"VP8L"]
    lossy = dict(_webp_chunks(inputs.webp_lossy))[b"VP8 "]
    big, max24 = 16384, 1 << 24
    return [
        ("vp8l-16384x16384", _riff([(b"VP8L", _vp8l_sized(lossless, big, big))])),
        ("vp8-16383x16383", _riff([(b"VP8 ", _vp8_sized(lossy, big - 1, big - 1))])),
        ("vp8x-16384-canvas", _riff([_vp8x(big, big), (b"VP8L", lossless)])),
        ("vp8x+vp8l-16384", _riff([_vp8x(big, big), (b"VP8L", _vp8l_sized(lossless, big, big))])),
        ("vp8x-2^24-canvas", _riff([_vp8x(max24, max24), (b"VP8L", lossless)])),
        ("vp8x-alpha-16384", _riff([_vp8x(big, big, 0x10), (b"VP8 ", lossy)])),
        ("vp8l-16384-truncated", _riff([(b"VP8L", _vp8l_sized(lossless, big, big))])[:40]),
        ("vp8-truncated", _riff([(b"VP8 ", _vp8_sized(lossy, big - 1, big - 1)[:24])])),
    ]


# -- random values -------------------------------------------------------------------------------

_TOKEN = string.ascii_letters + string.digits + "-_"
_CONTROL = "".join(chr(c) for c in range(32) if chr(c) not in "\r\n") + "\x7f"
_UNICODE = (
    "äöüßéñçøåæ€£¥©®™ßĳœ中文字日本語한국어עבריתالعربية😀🚀👍🏽\u200b\u200d\u202e\ufeff\u2028\u0301"
)


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_TOKEN, k=n))


def _random_value(rng: random.Random) -> str:
    style = rng.choice(("long", "unicode", "control", "mixed", "short"))
    if style == "long":
        value = _token(rng, rng.randint(1_000, 15_000))
    elif style == "unicode":
        value = "".join(rng.choices(_UNICODE, k=rng.randint(1, 400)))
    elif style == "control":
        value = "".join(rng.choices(_CONTROL + "ab.*> ", k=rng.randint(1, 200)))
    elif style == "mixed":
        pool = _TOKEN + _CONTROL + _UNICODE + ".*> ,;=\"'\\{}[]"
        value = "".join(rng.choices(pool, k=rng.randint(1, 3_000)))
    else:
        value = rng.choice(("0", "-1", "*", ">", ".", "..", "null", "{}", "%00", "true", "1e999"))
    value = value.strip().translate(_NEWLINES).strip()
    return value or "x"


_INTERESTING8 = (0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE)
_INTERESTING32 = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 16384, 65535, 1 << 24)


def _mutate(rng: random.Random, data: bytes, keep: int = 0, extra: bytes = b"") -> bytes:
    """A few random byte edits after the first `keep` bytes (flip, set, insert, delete,
    duplicate, truncate, 32-bit overwrite, or insert one of `extra`'s bytes)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if len(out) <= keep:
            break
        pos = rng.randrange(keep, len(out))
        op = rng.randrange(8 if extra else 7)
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.choice(_INTERESTING8)
        elif op == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4:
            out[pos:pos] = out[pos : pos + rng.randint(1, 32)]
        elif op == 5:
            del out[max(pos, keep + 1) :]
        elif op == 6:
            packed = struct.pack(rng.choice("<>") + "I", rng.choice(_INTERESTING32))
            out[pos : pos + 4] = packed
        else:
            out[pos:pos] = bytes([rng.choice(extra)]) * rng.randint(1, 64)
    return bytes(out)


# -- the kinds -----------------------------------------------------------------------------------

Builder = Callable[[random.Random, _Inputs, int], list[Case]]

_BAD_REPLIES: dict[str, Callable[[random.Random, int], str]] = {
    "long": lambda rng, i: (
        "r." + "x" * 5000
        if i == 0
        else rng.choice(
            (
                "r." + "x" * rng.choice((4_090, 4_097, 6_000, 8_192, 20_000, 60_000)),
                "_INBOX." + ".".join(_token(rng, 8) for _ in range(rng.randint(500, 2_000))),
                "r." + _token(rng, rng.randint(4_100, 30_000)),
            )
        )
    ),
    "space": lambda rng, i: (
        rng.choice(("a b", "a\tb", "inbox x.y", "a\x0bb", "a\x0cb", "_INBOX.a b")) + f".{i}"
    ),
    "wildcard": lambda rng, i: rng.choice(
        (f"a{i}.*", f"a{i}.>", "*", ">", f"a{i}.*.b", "*.*", f"_INBOX.{i}.>", f"fuzz.{i}.*")
    ),
    "empty-token": lambda rng, i: rng.choice(
        (f"a{i}..b", f".a{i}", f"a{i}.", ".", "..", f"a{i}...b", f"_INBOX..{i}")
    ),
}


def _reply_header(name: str, count: int) -> Builder:
    def build(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
        return [
            Case(f"reply-{name}", {Header.REPLY_TO: _BAD_REPLIES[name](rng, i)}, inputs.png)
            for i in range(count)
        ]

    return build


def _reply_envelope(name: str, count: int) -> Builder:
    def build(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
        cases = []
        for i in range(count):
            reply = _BAD_REPLIES[name](rng, i)
            headers = JSON_CT if i % 2 else {}
            payload = _envelope(inputs, reply_to=reply)
            cases.append(Case(f"envelope-reply-{name}", dict(headers), payload, reply=False))
        return cases

    return build


def _reply_internal(rng: random.Random, inputs: _Inputs, seed: int) -> list[Case]:
    """Replies into Surge's own subjects or the server's (DESIGN.md, Trust)."""
    targets = [
        f"surge.results.fuzz-victim-{seed}-{{i}}",
        "surge.jobs.high.nsfw",
        "surge.jobs.normal.tiny",
        "surge.dead.tiny",
        "surge.heartbeat.tiny",
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.SURGE_JOBS",
        "$SYS.REQ.SERVER.PING",
        "$O.surge-blobs.M.fuzz",
        "$KV.fuzz.key",
    ]
    cases = []
    for i, target in enumerate(targets):
        reply = target.format(i=i)
        if i % 3 == 2:
            payload = _envelope(inputs, reply_to=reply)
            cases.append(Case("reply-internal", {}, payload, reply=False, note=f"envelope {reply}"))
        else:
            cases.append(Case("reply-internal", {Header.REPLY_TO: reply}, inputs.png, note=reply))
    return cases


def _msgid_huge(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    sizes = (257, 300, 1_000, 4_096, 10_000, 20_000, 32_768, 50_000, 60_000, 65_000)
    return [
        Case("msgid-huge", {Header.MSG_ID: _token(rng, n)}, inputs.png, note=str(n)) for n in sizes
    ]


def _msgid_bad_token(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    shapes = ("a.b", "a b", "a*", ">", "a.>", "*.x", "job\t1", "ü ml", "x.", ".x", "a..b", "a\x0bb")
    cases = []
    for i in range(20):
        shape = shapes[i % len(shapes)]
        value = f"{shape}-{i}-{_token(rng, 6)}" if shape not in ("x.", ".x") else f"{i}{shape}"
        cases.append(Case("msgid-bad-token", {Header.MSG_ID: value}, inputs.png))
    return cases


def _fit(size_for: Callable[[int], int], below: int) -> int:
    """The n for which size_for(n) == MAX_PAYLOAD - WIRE_MARGIN - below (size grows 1:1)."""
    target = MAX_PAYLOAD - WIRE_MARGIN - below
    return target - (size_for(target) - target)


def _echo_near_max(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    """Fields an error message might echo, sized so that such a result lands around the
    server's max_payload: the incoming message just fits, an echoing answer would not.
    (Headers cannot carry this much: JetStream refuses header blocks over 64 KiB.)"""
    tiny = _b64(inputs.small_png)
    ce = {"specversion": "1.0", "id": "e", "source": "s", "type": "t"}
    either = frozenset({E.UNSUPPORTED_MEDIA_TYPE, E.BAD_ENVELOPE})
    carriers: list[tuple[str, Callable[[str], bytes], frozenset[E], bool]] = [
        ("envelope.function", lambda v: _json({"image": tiny, "function": v}), SUBJECT_ODD, True),
        ("envelope.outputs", lambda v: _json({"image": tiny, "outputs": [v]}), ENVELOPE, True),
        ("envelope.image_ref", lambda v: _json({"image_ref": v}), REF, True),
        (
            "envelope.content_type",
            lambda v: _json({"image": tiny, "content_type": v}),
            either,
            True,
        ),
        ("envelope.job_id", lambda v: _json({"image": tiny, "job_id": v}), ENVELOPE, False),
        ("envelope.deadline", lambda v: _json({"image": tiny, "deadline": v}), ENVELOPE, True),
        ("envelope.reply_to", lambda v: _json({"image": tiny, "reply_to": v}), ENVELOPE, True),
        ("cloudevent.id", lambda v: _json({**ce, "id": v, "data_base64": tiny}), ENVELOPE, False),
        (
            "cloudevent.datacontenttype",
            lambda v: _json({**ce, "datacontenttype": v, "data_base64": tiny}),
            either,
            True,
        ),
    ]
    below = (0, 100, 250, 400, 600, 900, 1_500)
    cases = []
    for i in range(2 * len(carriers)):
        name, make, codes, msg_id = carriers[i % len(carriers)]
        gap = below[(i + 3 * (i // len(carriers)) + rng.randrange(2)) % len(below)]

        def size(n: int, make: Callable[[str], bytes] = make) -> int:
            return wire_size(JSON_CT, make("e" * n))

        n = _fit(size, gap)
        headers = {} if name.startswith("cloudevent") else dict(JSON_CT)
        reply = name != "envelope.reply_to"
        note = f"{name}={n}"
        payload = make("e" * n)
        cases.append(Case("echo-near-max", headers, payload, codes, False, reply, note, msg_id))
    return cases


def _deadline_overflow(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    headers = [
        "99999999999999999999",
        "9" * 30,
        "9" * 400,
        "99999999999999999999.5",
        "253402300800",
        "1" + "0" * 4_400,
        "18446744073709551616",
    ]
    cases = [Case("deadline-overflow", {Header.DEADLINE: v}, inputs.png) for v in headers]
    for value in (99999999999999999999, "99999999999999999999", 1e300):
        cases.append(Case("deadline-overflow", dict(JSON_CT), _envelope(inputs, deadline=value)))
    return cases


def _deadline_garbage(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    values = [
        "tomorrow",
        "NaN",
        "inf",
        "-inf",
        "2024-13-45T99:99:99Z",
        "1.2.3",
        "0x10",
        "now",
        "2024-01-01T00:00:00+25:00",
        "1e10",
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠١٢٣٤٥",
        "2024-01-01 garbage",
        "\x00\x01\x02",
    ]
    cases = [
        Case("deadline-garbage", {Header.DEADLINE: v}, inputs.png, DEADLINE, note=v[:16])
        for v in values
    ]
    for value in ("tomorrow", [1, 2], {"at": 1}):
        payload = _envelope(inputs, deadline=value)
        cases.append(Case("deadline-garbage", dict(JSON_CT), payload, DEADLINE))
    return cases


def _deadline_negative(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    values = [
        "-1",
        "-1.5",
        "-0",
        "-99999999999999999999",
        "-62135596801",
        f"-{rng.randint(1, 10**9)}",
    ]
    cases = [Case("deadline-negative", {Header.DEADLINE: v}, inputs.png, DEADLINE) for v in values]
    for value in (-1, -99999999999999999999, "-1"):
        payload = _envelope(inputs, deadline=value)
        cases.append(Case("deadline-negative", dict(JSON_CT), payload, DEADLINE, note="envelope"))
    return cases


def _json_deep(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    def arrays(d: int) -> str:
        return "[" * d + "]" * d

    def objects(d: int) -> str:
        return '{"a":' * d + "1" + "}" * d

    shapes: list[tuple[str, Callable[[int], bytes], dict[str, str]]] = [
        ("image=[[..]]", lambda d: f'{{"image":{arrays(d)}}}'.encode(), {}),
        ("[[..]]", lambda d: arrays(d).encode(), dict(JSON_CT)),
        ("{a:{a:..}}", lambda d: objects(d).encode(), {}),
        ("outputs=[[..]]", lambda d: f'{{"image":"","outputs":{arrays(d)}}}'.encode(), JSON_CT),
        (
            "cloudevent.data",
            lambda d: (
                f'{{"specversion":"1.0","id":"x","source":"s","type":"t","data":{objects(d)}}}'.encode()
            ),
            dict(CE_CT),
        ),
    ]
    cases = []
    for i, depth in enumerate((50_000, 50_000, 50_000, 50_000, 50_000, 20_000, 100_000, 5_000)):
        name, make, headers = shapes[i % len(shapes)]
        cases.append(Case("json-deep", dict(headers), make(depth), note=f"{name} {depth}"))
    return cases


def _json_bigint(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    def digits(n: int) -> str:
        return str(rng.randint(1, 9)) + "".join(rng.choices(string.digits, k=n - 1))

    b64 = _b64(inputs.png)
    shapes: list[tuple[str, Callable[[str], bytes], dict[str, str]]] = [
        ("image", lambda n: f'{{"image":{n}}}'.encode(), {}),
        ("deadline", lambda n: f'{{"image":"{b64}","deadline":{n}}}'.encode(), dict(JSON_CT)),
        ("outputs", lambda n: f'{{"image":"{b64}","outputs":[{n}]}}'.encode(), {}),
        ("bare", lambda n: n.encode(), dict(JSON_CT)),
        ("job_id", lambda n: f'{{"image":"{b64}","job_id":{n}}}'.encode(), {}),
        (
            "cloudevent.id",
            lambda n: f'{{"specversion":"1.0","id":{n},"source":"s","type":"t"}}'.encode(),
            dict(CE_CT),
        ),
    ]
    cases = []
    for i, size in enumerate((5_000,) * 6 + (4_301, 10_000, 50_000, 5_000, 5_000, 5_000)):
        name, make, headers = shapes[i % len(shapes)]
        number = digits(size) if i < 9 else "-" + digits(size)
        cases.append(Case("json-bigint", dict(headers), make(number), note=f"{name} {size}"))
    return cases


def _webp_huge(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    cases = []
    for i, (name, data) in enumerate(_huge_webps(inputs)):
        headers = {Header.CONTENT_TYPE: "image/webp"} if i % 2 else {}
        cases.append(Case("webp-huge", headers, data, PIXELS, note=name))
    return cases


def _broken(fmt: str) -> Builder:
    """Truncated or corrupted images of one format that Pillow cannot decode."""

    def build(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
        bases = {"png": inputs.pngs, "jpeg": inputs.jpegs, "webp": inputs.webps}[fmt]
        magic = {"png": 8, "jpeg": 3, "webp": 12}[fmt]
        cases: list[Case] = []
        while len(cases) < 16:
            base = rng.choice(bases)
            i = len(cases)
            if i % 3 == 0:
                cut = rng.randint(1, len(base) - 24)
                data, note = base[:cut], f"cut at {cut}/{len(base)}"
            elif i % 3 == 1:
                keep = rng.randint(magic, min(len(base) - 1, magic + 40))
                data = base[:keep] + rng.randbytes(rng.randint(0, 400))
                note = f"garbage after {keep}"
            else:
                data, note = base[: magic + 4] + b"\x00" * rng.randint(0, 64), "zeros"
            if _decodes(data):
                continue
            headers = {Header.CONTENT_TYPE: f"image/{fmt}"} if i % 2 else {}
            cases.append(Case(f"broken-{fmt}", headers, data, frozenset({E.BAD_IMAGE}), note=note))
        return cases

    return build


def _other_format(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    cases = []
    for name, data in inputs.others:
        cases.append(
            Case("other-format", {}, data, frozenset({E.UNSUPPORTED_MEDIA_TYPE}), note=name)
        )
        declared = rng.choice((f"image/{name}", "image/png", "application/octet-stream"))
        codes = frozenset({E.UNSUPPORTED_MEDIA_TYPE, E.BAD_IMAGE})
        cases.append(Case("other-format", {Header.CONTENT_TYPE: declared}, data, codes, note=name))
    return cases


def _empty_payload(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    image = frozenset({E.BAD_IMAGE})
    either = frozenset({E.BAD_IMAGE, E.BAD_ENVELOPE, E.UNSUPPORTED_MEDIA_TYPE})
    ce = {Header.CE_SPECVERSION: "1.0", "ce-id": "e", "ce-source": "s", "ce-type": "t"}
    variants: list[tuple[dict[str, str], frozenset[E]]] = [
        ({}, image),
        ({Header.CONTENT_TYPE: "image/png"}, image),
        ({Header.CONTENT_TYPE: "image/jpeg"}, image),
        ({Header.CONTENT_TYPE: "image/webp"}, image),
        (dict(JSON_CT), ENVELOPE),
        (dict(CE_CT), ENVELOPE),
        ({**ce, Header.CONTENT_TYPE: "image/png"}, either),
        ({Header.CONTENT_TYPE: "text/plain"}, either),
    ]
    return [Case("empty-payload", h, b"", codes, note=str(list(h))) for h, codes in variants]


def _bad_base64(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    good = _b64(inputs.png)
    candidates = [
        "not base64!!",
        "aGVsbG8",
        "a",
        "====",
        "aGVs\nbG8=",
        "aGVsbG8=\x00",
        "ÿÿÿÿ",
        good + "=====",
        good.replace("+", "-").replace("/", "_") + "-_-_",
        "data:image/png;base64," + good,
        good[:10] + " " + good[10:],
        good[:-1],
        "".join(rng.choices(string.punctuation, k=64)),
        "😀" * 8,
    ]
    cases = []
    for i, text in enumerate(candidates):
        try:
            base64.b64decode(text, validate=True)
            continue  # accidentally valid
        except ValueError:
            pass
        if i % 4 == 3:
            doc = {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data_base64": text}
            cases.append(Case("bad-base64", dict(CE_CT), _json(doc), note="data_base64"))
        else:
            cases.append(Case("bad-base64", dict(JSON_CT), _json({"image": text}), note=text[:12]))
    return cases


def _outputs_unknown(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    header_values = [
        "hologram",
        "scores,hologram",
        "SCORES",
        "scores;mask",
        "ścores",
        "mask,cutout",
        "x" * 50_000,
        "a," * 25_000,
        "scores,\x01",
        ",".join(_token(rng, 12) for _ in range(2_000)),
    ]
    cases = [
        Case("outputs-unknown", {Header.OUTPUTS: v}, inputs.png, note=v[:12]) for v in header_values
    ]
    for outputs in (["hologram"], [""], [1], "scores", ["x" * 100_000], [_token(rng, 8)] * 30_000):
        payload = _envelope(inputs, outputs=outputs)
        cases.append(Case("outputs-unknown", dict(JSON_CT), payload, note="envelope"))
    return cases


def _ce_structured(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    base = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "fuzz",
        "type": "dev.surge.job",
        "datacontenttype": "application/json",
        "data": {"image": _b64(inputs.png)},
    }
    edits: list[tuple[str, dict[str, object], tuple[str, ...]]] = [
        ("no id", {}, ("id",)),
        ("no source", {}, ("source",)),
        ("no type", {}, ("type",)),
        ("no specversion", {}, ("specversion",)),
        ("no data", {}, ("data",)),
        ("specversion 0.3", {"specversion": "0.3"}, ()),
        ("specversion 2.0", {"specversion": "2.0"}, ()),
        ("specversion number", {"specversion": 1.0}, ()),
        ("id null", {"id": None}, ()),
        ("type number", {"type": 7}, ()),
        ("data string", {"data": "hello"}, ()),
        ("bad time", {"time": "yesterday-ish"}, ()),
        ("only specversion", {}, ("id", "source", "type", "data", "datacontenttype")),
        ("data empty", {"data": {}}, ()),
    ]
    cases = []
    for i, (note, changes, removed) in enumerate(edits):
        doc = {k: v for k, v in {**base, **changes}.items() if k not in removed}
        headers = dict(CE_CT) if i % 3 else {}
        cases.append(Case("ce-structured-missing", headers, _json(doc), note=note))
    return cases


def _ce_binary(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    base = {
        Header.CE_SPECVERSION: "1.0",
        "ce-id": "e-1",
        "ce-source": "fuzz",
        "ce-type": "dev.surge.job",
        Header.CONTENT_TYPE: "image/png",
    }
    edits: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
        ("no ce-id", {}, ("ce-id",)),
        ("no ce-source", {}, ("ce-source",)),
        ("no ce-type", {}, ("ce-type",)),
        ("no ce-id/source/type", {}, ("ce-id", "ce-source", "ce-type")),
        ("specversion 0.3", {Header.CE_SPECVERSION: "0.3"}, ()),
        ("specversion 1", {Header.CE_SPECVERSION: "1"}, ()),
        ("specversion junk", {Header.CE_SPECVERSION: "\x01\x02"}, ()),
        ("bad ce-time", {"ce-time": "not a time"}, ()),
        ("no ce-source, json", {Header.CONTENT_TYPE: "application/json"}, ("ce-source",)),
        ("no ce-type, webp", {}, ("ce-type",)),
        ("no ce-source, no ct", {}, ("ce-source", Header.CONTENT_TYPE)),
        ("ce-id only", {}, ("ce-source", "ce-type")),
        ("no ce-id, envelope", {Header.CONTENT_TYPE: "application/json"}, ("ce-id",)),
        ("specversion unicode", {Header.CE_SPECVERSION: "\uff11.\uff10"}, ()),
    ]
    cases = []
    for note, changes, removed in edits:
        headers = {k: v for k, v in {**base, **changes}.items() if k not in removed}
        payload = inputs.png
        if "webp" in note:
            payload = inputs.webp_lossy
        elif headers.get(Header.CONTENT_TYPE) == "application/json":
            payload = _envelope(inputs)
        cases.append(Case("ce-binary-missing", headers, payload, note=note))
    return cases


def _envelope_shape(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    b64 = _b64(inputs.png)
    docs: list[tuple[str, object, frozenset[E]]] = [
        ("both", {"image": b64, "image_ref": "inputs/x"}, ENVELOPE),
        ("neither", {"outputs": ["scores"]}, ENVELOPE),
        ("both null", {"image": None, "image_ref": None}, ENVELOPE),
        ("empty object", {}, ENVELOPE),
        ("list", [b64], ENVELOPE),
        ("string", b64, ENVELOPE),
        ("null", None, ENVELOPE),
        ("number", 42, ENVELOPE),
        ("true", True, ENVELOPE),
        ("image empty", {"image": ""}, frozenset({E.BAD_IMAGE, E.BAD_ENVELOPE})),
        ("image object", {"image": {"data": b64}}, ENVELOPE),
        ("image_ref number", {"image_ref": 7}, ENVELOPE),
    ]
    return [
        Case("envelope-shape", dict(JSON_CT), _json(doc), codes, note=note)
        for note, doc, codes in docs
    ]


def _image_ref_missing(rng: random.Random, inputs: _Inputs, seed: int) -> list[Case]:
    codes = REF
    names = [
        f"inputs/nope-{seed}-{_token(rng, 8)}",
        f"inputs/nope-{seed}-{_token(rng, 8)}",
        f"results/{_token(rng, 16)}/scores",
        "",
        " ",
        "a" * 3_000,
        "../../etc/passwd",
        "*",
        ">",
        "a b.c",
        "ünïcode/ßß/😀",
        "inputs/\x00\x01",
    ]
    return [
        Case("image-ref-missing", dict(JSON_CT), _json({"image_ref": n}), codes, note=n[:16])
        for n in names
    ]


def _subject_oddity(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    """A job whose envelope or CloudEvent names a function other than its subject's: the
    subject-level oddities that reach a worker (others never match its consumer's filter)."""
    codes = SUBJECT_ODD
    functions = ["nsfw", "remove-bg", "tiny.x", "*", ">", "", "x" * 2_000, "TINY", "tïny", "tiny\t"]
    cases = [
        Case("subject-oddity", dict(JSON_CT), _envelope(inputs, function=f), codes, note=f[:12])
        for f in functions
    ]
    for function in ("nsfw", "surge.jobs.normal.nsfw"):
        doc = {
            "specversion": "1.0",
            "id": "e",
            "source": "s",
            "type": "t",
            "subject": "surge.jobs.normal.nsfw",
            "data": {"image": _b64(inputs.png), "function": function},
        }
        cases.append(Case("subject-oddity", dict(CE_CT), _json(doc), codes, note="cloudevent"))
    return cases


def _mutated_image(fmt: str, count: int) -> Builder:
    def build(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
        bases = {"png": inputs.pngs, "jpeg": inputs.jpegs, "webp": inputs.webps}[fmt]
        magic = {"png": 8, "jpeg": 3, "webp": 16}[fmt]
        cases = []
        for i in range(count):
            keep = magic if rng.random() < 0.85 else 0
            data = _mutate(rng, rng.choice(bases), keep)
            headers = {Header.CONTENT_TYPE: f"image/{fmt}"} if i % 3 == 0 else {}
            cases.append(Case(f"mutate-{fmt}", headers, data, ANY_BAD_INPUT, may_succeed=True))
        return cases

    return build


def _mutate_envelope(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    envelope = _envelope(inputs, outputs=["scores"], content_type="image/png")
    cloudevent = _json(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "fuzz",
            "type": "dev.surge.job",
            "datacontenttype": "application/json",
            "data": {"image": _b64(inputs.png)},
        }
    )
    extra = b'{}[]",:\\0123456789-+.eE \x00\xff' + "é😀".encode()
    cases = []
    for i in range(40):
        base, headers = (envelope, JSON_CT) if i % 2 else (cloudevent, CE_CT)
        data = _mutate(rng, base, 0, extra)
        headers = dict(headers) if i % 4 < 2 else {}
        cases.append(Case("mutate-envelope", headers, data, ANY_BAD_INPUT, may_succeed=True))
    return cases


_HEADER_POOL = (
    Header.REPLY_TO,
    Header.DEADLINE,
    Header.OUTPUTS,
    Header.CONTENT_TYPE,
    Header.MSG_ID,
    Header.TRACEPARENT,
    Header.TRACESTATE,
    Header.JOB_ID,
    "X-Fuzz",
)


def _random_headers(rng: random.Random, inputs: _Inputs, _: int) -> list[Case]:
    payloads = [inputs.png, inputs.jpegs[0], inputs.webp_lossy]
    cases = []
    for i in range(40):
        headers: dict[str, str] = {}
        for name in rng.sample(_HEADER_POOL, rng.randint(1, 4)):
            key = f"X-Fuzz-{_token(rng, 6)}" if name == "X-Fuzz" else name
            headers[key] = _random_value(rng)
        if Header.MSG_ID in headers:  # unique, or JetStream drops it as a duplicate
            headers[Header.MSG_ID] += f"~{i}"
        if i in (7, 29):  # a lone surrogate: not UTF-8, so the client refuses to send it
            headers[Header.TRACESTATE] = "k=\ud800"
        reply = Header.REPLY_TO not in headers
        payload = rng.choice(payloads)
        note = ",".join(sorted(headers))
        cases.append(
            Case("random-headers", headers, payload, ANY_BAD_INPUT, True, reply, note=note)
        )
    return cases


KINDS: dict[str, Builder] = {
    "reply-long": _reply_header("long", 16),
    "reply-space": _reply_header("space", 14),
    "reply-wildcard": _reply_header("wildcard", 14),
    "reply-empty-token": _reply_header("empty-token", 14),
    "envelope-reply-long": _reply_envelope("long", 10),
    "envelope-reply-space": _reply_envelope("space", 10),
    "envelope-reply-wildcard": _reply_envelope("wildcard", 10),
    "envelope-reply-empty-token": _reply_envelope("empty-token", 10),
    "reply-internal": _reply_internal,
    "msgid-huge": _msgid_huge,
    "msgid-bad-token": _msgid_bad_token,
    "echo-near-max": _echo_near_max,
    "deadline-overflow": _deadline_overflow,
    "deadline-garbage": _deadline_garbage,
    "deadline-negative": _deadline_negative,
    "json-deep": _json_deep,
    "json-bigint": _json_bigint,
    "webp-huge": _webp_huge,
    "broken-png": _broken("png"),
    "broken-jpeg": _broken("jpeg"),
    "broken-webp": _broken("webp"),
    "other-format": _other_format,
    "empty-payload": _empty_payload,
    "bad-base64": _bad_base64,
    "outputs-unknown": _outputs_unknown,
    "ce-structured-missing": _ce_structured,
    "ce-binary-missing": _ce_binary,
    "envelope-shape": _envelope_shape,
    "image-ref-missing": _image_ref_missing,
    "subject-oddity": _subject_oddity,
    "mutate-png": _mutated_image("png", 30),
    "mutate-jpeg": _mutated_image("jpeg", 30),
    "mutate-webp": _mutated_image("webp", 30),
    "mutate-envelope": _mutate_envelope,
    "random-headers": _random_headers,
}


def generate(seed: int, kinds: Iterable[str] | None = None) -> list[Case]:
    """All cases for `seed` (or only `kinds`), in a seeded shuffled order.

    Each kind draws from its own `random.Random` derived from the seed, so filtering
    kinds never changes the cases of the others.
    """
    wanted = set(kinds) if kinds is not None else set(KINDS)
    unknown = wanted - KINDS.keys()
    if unknown:
        raise ValueError(f"unknown fuzz kinds: {sorted(unknown)}")
    inputs = _Inputs.build(random.Random(seed))
    cases: list[Case] = []
    for index, (kind, build) in enumerate(KINDS.items()):
        if kind in wanted:
            cases += build(random.Random(seed * 1_000 + index), inputs, seed)
    random.Random(seed).shuffle(cases)
    return cases


def kind_counts(cases: Iterable[Case]) -> Counter[str]:
    return Counter(case.kind for case in cases)
