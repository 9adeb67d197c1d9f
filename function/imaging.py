"""Decoding untrusted image bytes into loaded RGB/RGBA images, and PNG encoding.

`decode_image` opens PNG, JPEG and WebP only, with the Pillow plugin for the sniffed
format, and checks the pixel count from the header before any pixel is decoded. It does
not go through `PIL.Image.open`, so Pillow's global decompression-bomb limit (a warning,
then an error) never applies: `max_pixels` is the one limit.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Final

import numpy as np
from PIL import (
    ExifTags,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from function.errors import BadInput, ErrorCode
from function.jobs import SUPPORTED_IMAGE_TYPES, sniff_image_type

__all__ = ["decode_image", "encode_png"]

_OPENERS: Final[dict[str, type[ImageFile.ImageFile]]] = {
    "image/png": PngImagePlugin.PngImageFile,
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
}
# Recognisable image formats Surge does not accept (answered with unsupported_media_type).
_OTHER_FORMATS: Final[tuple[tuple[bytes, str], ...]] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
)
_ISO_BMFF_BRANDS: Final[dict[bytes, str]] = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
)
_ACCEPTED: Final = ", ".join(SUPPORTED_IMAGE_TYPES)
_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _other_format(data: bytes) -> str | None:
    """Name of a known, unsupported image format these bytes start with."""
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return _ISO_BMFF_BRANDS.get(data[8:12])
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _media_type(data: bytes, content_type: str | None) -> str:
    """Check the declared type and sniff the bytes; return the supported media type."""
    declared = content_type.split(";")[0].strip().lower() if content_type else None
    if declared == "application/octet-stream":
        declared = None
    if declared is not None and declared not in SUPPORTED_IMAGE_TYPES:
        raise BadInput(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"content type {declared!r} is not supported; send one of {_ACCEPTED}",
        )
    if not data:
        raise BadInput(ErrorCode.BAD_IMAGE, "image is empty (0 bytes)")
    sniffed = sniff_image_type(data)
    if sniffed is not None:
        return sniffed
    other = _other_format(data)
    if other is not None:
        raise BadInput(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"{other} images are not supported; send one of {_ACCEPTED}",
        )
    raise BadInput(
        ErrorCode.BAD_IMAGE,
        f"not a PNG, JPEG or WebP image (first bytes: {data[:8].hex(' ')}, {len(data)} bytes)",
    )


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float greyscale to 8-bit L."""
    arr = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(arr, 0.0, 1.0) * 255.0 if float(arr.max(initial=0)) <= 1.0 else arr
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    wide = arr.astype(np.int64)
    if image.mode.startswith("I;16") or int(wide.max(initial=0)) > 255:
        wide = np.clip(wide, 0, 65535) >> 8
    return Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8))


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB, or RGBA when the image has transparency."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode == "I" or image.mode == "F" or image.mode.startswith("I;16"):
        return _to_8bit(image).convert("RGB")
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def decode_image(data: bytes, content_type: str | None, *, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes into a loaded, upright RGB or RGBA image.

    Raises `BadInput` with `unsupported_media_type`, `too_many_pixels` or `bad_image`.
    """
    media = _media_type(data, content_type)
    kind = media.split("/")[1].upper()
    try:
        image = _OPENERS[media](io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise BadInput(ErrorCode.BAD_IMAGE, f"cannot read {kind} header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise BadInput(ErrorCode.BAD_IMAGE, f"{kind} image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise BadInput(
            ErrorCode.TOO_MANY_PIXELS,
            f"image is {width}x{height} = {width * height} pixels, limit {max_pixels}",
        )
    try:
        image.load()
        upright: Image.Image = image
        if "exif" in image.info and image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            upright = ImageOps.exif_transpose(image)
        return _normalise_mode(upright)
    except _DECODE_ERRORS as exc:
        raise BadInput(
            ErrorCode.BAD_IMAGE, f"{kind} image data is truncated or corrupt: {exc}"
        ) from exc


def encode_png(image: Image.Image, *, compress_level: int = 1) -> bytes:
    """Encode an image as PNG; level 1 favours speed over size."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
