"""Decoding untrusted image bytes into loaded RGB/RGBA images, and PNG encoding.

`open_image` reads the header of PNG, JPEG or WebP only, with the Pillow plugin for the
sniffed format, and checks the pixel count before any pixel is decoded (WebP's size is
read from the bytes, since Pillow's WebP opener allocates the canvas); `PendingImage`
then decodes, reduced for the task where it allows. It does not go through
`PIL.Image.open`, so `max_pixels` is the limit (but Pillow's own, 179 M pixels, still
holds for WebP). Any failure to read or decode (whatever Pillow raises, `MemoryError`
aside) is a `BadInput` with its code and a short message.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator
from typing import Final

import numpy as np
from PIL import (
    ExifTags,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
    _imaging,
)

from function.contract.errors import BadInput, ErrorCode, clip
from function.contract.parse import sniff_image_type
from function.contract.wire import SUPPORTED_IMAGE_TYPES

__all__ = [
    "SOURCE_SIZE",
    "PendingImage",
    "decode_image",
    "encode_png",
    "open_image",
    "source_size",
]

# Image memory in blocks over glibc's largest dynamic mmap threshold (32 MiB), so a large
# image's blocks are mapped and unmapped, and its memory goes back to the system when it
# is freed instead of staying in a thread's malloc arena. PILLOW_BLOCK_SIZE overrides it.
ALLOCATOR_BLOCK_BYTES: Final = 64 * 1024 * 1024
if "PILLOW_BLOCK_SIZE" not in os.environ:
    _imaging.set_block_size(ALLOCATOR_BLOCK_BYTES)

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
# A decode's peak in multiples of its image at 4 bytes a pixel (measured at 6000x6000):
# RGB(A) decodes in place; other modes are converted (L, P: 1.25; LA, CMYK: 2; I;16:
# 1.75); WebP holds libwebp's two canvases, a copy of the frame and Pillow's image.
_MODE_PEAK: Final = {"RGB": 1, "RGBA": 1, "RGBX": 1, "I": 3, "F": 3}
_WEBP_PEAK: Final = 4
SOURCE_SIZE: Final = "surge.source_size"  # image.info key: the input's upright size
MESSAGE_LIMIT: Final = 160  # longest text from an input that an error message carries
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
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
            f"content type {clip(repr(declared), 64)} is not supported; send one of {_ACCEPTED}",
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
    """Scale 16/32-bit integer and float greyscale to 8-bit L (at most ~2 copies at 4 B/px)."""
    arr = np.asarray(image)
    if image.mode == "F":
        top = 1.0 if float(arr.max(initial=0)) <= 1.0 else 255.0
        scaled = np.clip(arr, 0.0, top)
        scaled *= 255.0 / top
        return Image.fromarray(scaled.astype(np.uint8))
    if image.mode.startswith("I;16"):
        unsigned = arr if arr.dtype.kind == "u" else np.clip(arr, 0, None)
        return Image.fromarray((unsigned >> 8).astype(np.uint8))
    if int(arr.max(initial=0)) > 255:
        wide = np.clip(arr, 0, 65535)
        wide >>= 8
        return Image.fromarray(wide.astype(np.uint8))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert any decoded mode to RGB, or RGBA when the image has transparency."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode == "I" or image.mode == "F" or image.mode.startswith("I;16"):
        return _to_8bit(image).convert("RGB")
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas size from a WebP header (VP8, VP8L or VP8X), read without decoding.

    Pillow's WebP opener allocates the whole canvas, so the size is checked first.
    """
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise BadInput(ErrorCode.BAD_IMAGE, "cannot read WEBP header: no VP8, VP8L or VP8X size")


@contextlib.contextmanager
def _reading(kind: str, stage: str) -> Iterator[None]:
    """Turn any exception but `MemoryError` into a `BadInput` with its code."""
    try:
        yield
    except (MemoryError, BadInput):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        message = f"{kind} image is too large: {clip(exc, MESSAGE_LIMIT)}"
        raise BadInput(ErrorCode.TOO_MANY_PIXELS, message) from exc
    except Exception as exc:
        detail = clip(f"{type(exc).__name__}: {exc}", MESSAGE_LIMIT)
        raise BadInput(ErrorCode.BAD_IMAGE, f"{kind} {stage}: {detail}") from exc


def source_size(image: Image.Image) -> tuple[int, int]:
    """The upright size of the input as sent; a decode reduced for a task is smaller."""
    size = image.info.get(SOURCE_SIZE)
    return size if isinstance(size, tuple) else image.size


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8; 1 when absent)."""
    if "exif" not in image.info:
        return 1
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) else 1


def _reduce(image: Image.Image, side: int) -> Image.Image:
    """Box-reduce by an integer factor keeping both sides >= `side` (0: unchanged).

    RGBA is reduced band by band (not premultiplied, as `Image.reduce` would), so
    colours under transparent pixels survive as they do in a plain resize.
    """
    factor = min(image.width, image.height) // side if side else 1
    if factor < 2:
        return image
    if image.mode != "RGBA":
        return image.reduce(factor)
    return Image.merge("RGBA", [image.getchannel(band).reduce(factor) for band in "RGBA"])


class PendingImage:
    """An image whose header is read and within the pixel limit; nothing decoded yet.

    `plan(target)` says how small the decode may be and returns `pixels`: the decode's
    peak in pixels of 4 bytes (Pillow keeps RGB as RGBX), the figure to admit it by:
    the decoded size times 1 (RGB, RGBA), 2 (other modes, converted) or 4 (WebP).
    `decode()` decodes. WebP is opened only by `decode()`, since Pillow's WebP opener
    allocates the canvas.
    """

    def __init__(
        self, data: bytes, media: str, size: tuple[int, int], file: ImageFile.ImageFile | None
    ) -> None:
        self.media = media
        self.kind = media.split("/")[1].upper()
        self.size = size
        self._data = data
        self._file = file
        self.decoded = size[0] * size[1]  # pixels of the image the decode makes
        self.pixels = self.decoded * self._peak()
        self._side = 0  # reduce to no less than this per side; 0: full resolution

    def _peak(self) -> int:
        """The decode's peak in multiples of the decoded image (4 bytes a pixel)."""
        if self._file is None:
            return _WEBP_PEAK
        return _MODE_PEAK.get(self._file.mode, 2)

    def plan(self, target: tuple[int, int] | None) -> int:
        """Allow the decode down to `target` (either orientation); return `pixels`.

        Every side stays at least twice the target's longer side, so a task's own resize
        still filters. JPEG decodes smaller (DCT scaling, `draft`); PNG and WebP decode
        whole and are then reduced, so their peak is at full size.
        """
        if target is None:
            return self.pixels
        self._side = 2 * max(target)
        if self._file is not None and self.media == "image/jpeg":
            with _reading(self.kind, "header is corrupt"):
                self._file.draft(None, (self._side, self._side))
            width, height = self._file.size
            self.decoded = width * height
            self.pixels = self.decoded * self._peak()
        return self.pixels

    def decode(self) -> Image.Image:
        """A loaded, upright RGB or RGBA image; `source_size` of it is the input's size."""
        with _reading(self.kind, "image data is truncated or corrupt"):
            image = self._file or _OPENERS[self.media](io.BytesIO(self._data))
            self._file, self._data = None, b""
            image.load()
            orientation = _orientation(image)
            decoded = _reduce(_normalise_mode(image), self._side)
            if decoded is image and self.media == "image/webp":
                decoded = image.copy()  # let the decoder's canvases go with `image`
            del image
            method = _TRANSPOSE.get(orientation)
            if method is not None:
                decoded = decoded.transpose(method)
        width, height = self.size
        decoded.info[SOURCE_SIZE] = (height, width) if orientation >= 5 else (width, height)
        return decoded


def open_image(data: bytes, content_type: str | None, *, max_pixels: int) -> PendingImage:
    """Read and check the header of PNG/JPEG/WebP bytes; decode nothing.

    Raises `BadInput` with `unsupported_media_type`, `too_many_pixels` or `bad_image`.
    """
    media = _media_type(data, content_type)
    kind = media.split("/")[1].upper()
    file: ImageFile.ImageFile | None = None
    with _reading(kind, "header is unreadable"):
        if media == "image/webp":
            width, height = _webp_size(data)
        else:
            file = _OPENERS[media](io.BytesIO(data))
            width, height = file.size
    if width <= 0 or height <= 0:
        raise BadInput(ErrorCode.BAD_IMAGE, f"{kind} image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise BadInput(
            ErrorCode.TOO_MANY_PIXELS,
            f"image is {width}x{height} = {width * height} pixels, limit {max_pixels}",
        )
    return PendingImage(data, media, (width, height), file)


def decode_image(
    data: bytes,
    content_type: str | None,
    *,
    max_pixels: int,
    target: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode PNG/JPEG/WebP bytes into a loaded, upright RGB or RGBA image.

    With `target` the image may come out smaller (see `PendingImage.plan`).
    Raises `BadInput` with `unsupported_media_type`, `too_many_pixels` or `bad_image`.
    """
    pending = open_image(data, content_type, max_pixels=max_pixels)
    pending.plan(target)
    return pending.decode()


def encode_png(image: Image.Image, *, compress_level: int = 1) -> bytes:
    """Encode an image as PNG; level 1 favours speed over size."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
