"""What `submit` accepts as an image, turned into the bytes a job carries."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from PIL import Image

__all__ = ["ImageInput", "as_deadline", "image_bytes"]

ImageInput: TypeAlias = bytes | bytearray | memoryview | str | Path | Image.Image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)[:256]!r}")
    return path.read_bytes()


async def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes: bytes as given, a path's file read, a PIL image as PNG.

    The worker decides whether the bytes are an image it can read (a `bad_image`
    result if not); here only the type is checked.
    """
    if isinstance(image, bytes):
        return image
    if isinstance(image, bytearray | memoryview):
        return bytes(image)
    if isinstance(image, str | Path):
        return await asyncio.to_thread(_read, Path(image))
    if isinstance(image, Image.Image):
        return await asyncio.to_thread(_png, image)
    raise TypeError(f"image: give bytes, a file path or a PIL image, not {type(image).__name__}")


def as_deadline(deadline: datetime | timedelta | float | None) -> datetime | None:
    """A deadline as a time: a datetime as given (no zone: UTC), a timedelta or a number
    of seconds from now."""
    if deadline is None or isinstance(deadline, datetime):
        return deadline
    if isinstance(deadline, timedelta):
        return datetime.now(UTC) + deadline
    if isinstance(deadline, int | float) and not isinstance(deadline, bool):
        return datetime.now(UTC) + timedelta(seconds=deadline)
    raise TypeError(
        f"deadline: give a datetime, a timedelta or seconds, not {type(deadline).__name__}"
    )
