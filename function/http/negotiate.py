"""Content negotiation for `/v1/infer`: the result JSON, or one image output itself.

    Accept: application/json, */* or none   the result JSON (images in base64)
    Accept: image/png (or image/*)           the image's bytes; `?output=` picks which

The image wins when the client rates it above JSON (`q` values; the most specific range
that matches counts). Without `?output=`, a function's entry in `IMAGE_DEFAULTS` is asked
for (`cutout` for remove-bg: the photo without its background), else the first image
output the function produces; a result without an image output is 406.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from function.contract.errors import ErrorCode, JobError
from function.contract.wire import ImageOutput, Result

__all__ = ["IMAGE_DEFAULTS", "MAX_ACCEPT_RANGES", "NotAcceptable", "pick_image", "wants_image"]

IMAGE_DEFAULTS: Final[Mapping[str, str]] = {"remove-bg": "cutout"}
"""The output `Accept: image/png` returns when `?output=` names none, per function."""
MAX_ACCEPT_RANGES: Final = 32
"""Media ranges of an `Accept` header that are read; the rest are ignored."""
_JSON: Final = "application/json"
_PNG: Final = "image/png"


class NotAcceptable(JobError):
    """The client asked for an image and the result has none (HTTP 406)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.UNSUPPORTED_MEDIA_TYPE, message)


def _q(params: Sequence[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def _quality(accept: str, media: str) -> float:
    """How much `accept` wants `media`: the `q` of the most specific matching range."""
    kind = media.split("/")[0]
    best, quality = -1, 0.0
    for entry in accept.split(",")[:MAX_ACCEPT_RANGES]:
        media_range, *params = entry.split(";")
        media_range = media_range.strip().lower()
        rank = {media: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range, -1)
        if rank > best:
            best, quality = rank, _q(params)
    return quality


def wants_image(accept: str | None) -> bool:
    """Whether `accept` rates `image/png` above `application/json`."""
    return bool(accept) and _quality(accept or "", _PNG) > _quality(accept or "", _JSON)


def pick_image(result: Result, asked: str | None) -> tuple[str, ImageOutput]:
    """The image output to send: the first of `asked` (a comma list) that is an image,
    else (nothing asked) the first image in `result`; `NotAcceptable` when there is none."""
    names = [name.strip() for name in (asked or "").split(",") if name.strip()]
    images = {n: o for n, o in result.outputs.items() if isinstance(o, ImageOutput) and o.data}
    for name in names or list(images):
        if name in images:
            return name, images[name]
    what = f"no image among outputs {', '.join(names)}" if names else "no image output"
    raise NotAcceptable(
        f"{result.function} has {what} to send as {_PNG}; ask for {_JSON} instead "
        f"(this result holds: {', '.join(result.outputs) or 'nothing'})"
    )
