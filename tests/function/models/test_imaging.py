"""decode_image / encode_png: supported formats, modes, orientation and every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from function.contract.errors import BadInput, ErrorCode
from function.models.imaging import decode_image, encode_png, open_image, source_size
from tests.helpers import bomb_webp

LIMIT = 40_000_000


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _noise(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(7)
    channels = len(mode)
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _bomb_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


def _code(data: bytes, content_type: str | None = None, max_pixels: int = LIMIT) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode_image(data, content_type, max_pixels=max_pixels)
    return caught.value


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("PNG", None)],
)
def test_decodes_supported_formats(fmt: str, content_type: str | None) -> None:
    source = _noise()
    image = decode_image(_encode(source, fmt), content_type, max_pixels=LIMIT)
    assert (image.size, image.mode) == ((64, 48), "RGB")
    if fmt == "PNG":
        assert np.array_equal(np.asarray(image), np.asarray(source))


def test_content_type_parameters_and_octet_stream_are_accepted() -> None:
    data = _encode(_noise(), "PNG")
    assert decode_image(data, "Image/PNG; charset=binary", max_pixels=LIMIT).size == (64, 48)
    assert decode_image(data, "application/octet-stream", max_pixels=LIMIT).size == (64, 48)


def test_real_photos_decode(photo_files: dict[str, Path]) -> None:
    for path in photo_files.values():
        image = decode_image(path.read_bytes(), None, max_pixels=LIMIT)
        assert image.mode == "RGB"
        assert image.width * image.height > 100_000


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("L", "RGB"), ("LA", "RGBA"), ("RGBA", "RGBA"), ("P", "RGB"), ("1", "RGB")],
)
def test_modes_become_rgb_or_rgba(mode: str, expected: str) -> None:
    source = _noise(mode="RGBA" if mode in ("LA", "RGBA") else "RGB").convert(mode)
    assert decode_image(_encode(source, "PNG"), None, max_pixels=LIMIT).mode == expected


def test_palette_with_transparency_becomes_rgba() -> None:
    source = _noise().convert("P")
    data = _encode(source, "PNG", transparency=0)
    image = decode_image(data, None, max_pixels=LIMIT)
    assert image.mode == "RGBA"


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    image = decode_image(data, None, max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(_noise().convert("CMYK"), "JPEG")
    assert decode_image(data, "image/jpeg", max_pixels=LIMIT).mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    source = _noise(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image = decode_image(_encode(source, "JPEG", exif=exif), None, max_pixels=LIMIT)
    assert image.size == (20, 40)


def test_empty_bytes() -> None:
    error = _code(b"")
    assert error.code == ErrorCode.BAD_IMAGE
    assert "empty" in error.message


def test_garbage_bytes() -> None:
    error = _code(b"this is not an image at all, just text" * 10)
    assert error.code == ErrorCode.BAD_IMAGE
    assert "not a PNG, JPEG or WebP" in error.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image(fmt: str) -> None:
    data = _encode(_noise(256, 256), fmt)
    error = _code(data[: len(data) // 2])
    assert error.code == ErrorCode.BAD_IMAGE
    assert error.message


def test_corrupt_png_data() -> None:
    data = bytearray(_encode(_noise(128, 128), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 20 : start + 400] = bytes(380)
    assert _code(bytes(data)).code == ErrorCode.BAD_IMAGE


def test_png_header_only() -> None:
    assert _code(b"\x89PNG\r\n\x1a\n").code == ErrorCode.BAD_IMAGE


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_image_formats_are_unsupported(fmt: str, name: str) -> None:
    error = _code(_encode(_noise(), fmt))
    assert error.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert name in error.message
    assert "image/png" in error.message


@pytest.mark.parametrize("content_type", ["text/plain", "image/gif", "application/json"])
def test_unsupported_content_type(content_type: str) -> None:
    error = _code(_encode(_noise(), "PNG"), content_type)
    assert error.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert content_type in error.message


def test_over_the_pixel_limit() -> None:
    error = _code(_encode(_noise(100, 80), "PNG"), max_pixels=5000)
    assert error.code == ErrorCode.TOO_MANY_PIXELS
    assert error.message == "image is 100x80 = 8000 pixels, limit 5000"


@pytest.mark.parametrize("side", [30_000, 60_000])
def test_decompression_bomb_is_refused_from_the_header(side: int) -> None:
    data = _bomb_png(side, side)
    assert len(data) < 200
    error = _code(data)
    assert error.code == ErrorCode.TOO_MANY_PIXELS
    assert f"{side}x{side} = {side * side} pixels, limit {LIMIT}" in error.message


def test_encode_png_round_trip() -> None:
    source = _noise().convert("RGBA")
    data = encode_png(source)
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "RGBA"
        assert np.array_equal(np.asarray(back), np.asarray(source))


# -- every failure is a BadInput with its code; messages stay short ----------------------


@pytest.mark.parametrize(("side", "limit"), [(16_384, LIMIT), (16_384, 10**9), (8_000, LIMIT)])
def test_webp_bomb_is_too_many_pixels(side: int, limit: int) -> None:
    """Over our limit, or over Pillow's own (its DecompressionBombError): never transient."""
    data = bomb_webp(side, side)
    assert len(data) < 200
    error = _code(data, max_pixels=limit)
    assert error.code == ErrorCode.TOO_MANY_PIXELS


def test_webp_size_is_read_before_the_decoder_allocates_it() -> None:
    pending = open_image(bomb_webp(4000, 4000), None, max_pixels=LIMIT)
    assert pending.size == (4000, 4000)
    assert pending.pixels == 4 * 4000 * 4000  # libwebp's canvases + Pillow's image
    assert _code(b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20)).code == ErrorCode.BAD_IMAGE


@pytest.mark.parametrize("failure", [RuntimeError, AssertionError, NotImplementedError])
def test_any_decoder_exception_is_bad_image(
    monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    def load(self: PngImagePlugin.PngImageFile) -> None:
        raise failure("x" * 10_000)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    error = _code(_encode(_noise(), "PNG"))
    assert error.code == ErrorCode.BAD_IMAGE
    assert failure.__name__ in error.message
    assert len(error.message) < 250


def test_memory_error_is_not_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: PngImagePlugin.PngImageFile) -> None:
        raise MemoryError

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    with pytest.raises(MemoryError):
        decode_image(_encode(_noise(), "PNG"), None, max_pixels=LIMIT)


def test_a_long_content_type_is_not_echoed() -> None:
    error = _code(_encode(_noise(), "PNG"), "text/" + "a" * 5000)
    assert error.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert len(error.message) < 200


# -- reduced decodes ---------------------------------------------------------------------


def test_jpeg_is_drafted_down_to_the_target() -> None:
    data = _encode(_noise(2000, 1600).resize((4000, 3200)), "JPEG")
    pending = open_image(data, None, max_pixels=LIMIT)
    assert pending.plan((320, 320)) == 1000 * 800  # DCT scaling by 4 keeps >= 640
    image = pending.decode()
    assert image.size == (1000, 800)
    assert source_size(image) == (4000, 3200)


def test_png_is_reduced_after_decoding() -> None:
    data = _encode(_noise(2000, 1300), "PNG")
    pending = open_image(data, None, max_pixels=LIMIT)
    assert pending.plan((320, 320)) == 2000 * 1300  # the decode itself is whole
    image = pending.decode()
    assert image.size == (1000, 650)
    assert source_size(image) == (2000, 1300)
    full = decode_image(data, None, max_pixels=LIMIT)
    assert full.size == source_size(full) == (2000, 1300)


def test_reduced_rgba_keeps_colour_under_transparent_pixels() -> None:
    source = Image.new("RGBA", (1400, 1400), (10, 200, 30, 0))
    image = decode_image(_encode(source, "PNG"), None, max_pixels=LIMIT, target=(320, 320))
    assert image.size == (700, 700)
    assert image.getpixel((5, 5)) == (10, 200, 30, 0)


def test_reduced_and_rotated_reports_the_upright_source_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_noise(200, 100).resize((2000, 1000)), "JPEG", exif=exif)
    image = decode_image(data, None, max_pixels=LIMIT, target=(64, 64))
    assert image.size == (250, 500)  # drafted by 4, then turned upright
    assert source_size(image) == (1000, 2000)


def test_grey_png_planned_at_twice_its_pixels() -> None:
    pending = open_image(_encode(_noise(100, 50, "L"), "PNG"), None, max_pixels=LIMIT)
    assert pending.plan(None) == 2 * 100 * 50  # L is converted to RGB beside itself
