"""Not-safe-for-work scoring with Yahoo's Open-NSFW ResNet (`nsfw`)."""

from __future__ import annotations

import io
from typing import Any, ClassVar, Final

import numpy as np
from PIL import Image

from function.contract.wire import Output, ScoresOutput
from function.models.base import Task

__all__ = ["NsfwClassifier"]

_RESIZE: Final = 256
_CROP: Final = 224
_BGR_MEAN: Final = np.array([104.0, 117.0, 123.0], dtype=np.float32)


class NsfwClassifier(Task):
    """Open-NSFW: P(nsfw) from a 224x224 BGR, mean-subtracted NHWC input."""

    name: ClassVar[str] = "nsfw"
    model_name: ClassVar[str] = "open_nsfw"
    default_outputs: ClassVar[tuple[str, ...]] = ("scores",)
    allowed_outputs: ClassVar[frozenset[str]] = frozenset({"scores"})

    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None:
        """Scores come from a 256x256 resize."""
        return (_RESIZE, _RESIZE)

    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int:
        """Scores only."""
        return 0

    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """Resize to 256², JPEG round trip (as in training), centre crop 224², BGR - mean."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        small = rgb.resize((_RESIZE, _RESIZE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG")
        with Image.open(io.BytesIO(buffer.getvalue()), formats=["JPEG"]) as jpeg:
            pixels = np.asarray(jpeg.convert("RGB"), dtype=np.float32)
        start = (_RESIZE - _CROP) // 2
        crop = pixels[start : start + _CROP, start : start + _CROP, ::-1]
        return np.ascontiguousarray(crop - _BGR_MEAN, dtype=np.float32)

    def postprocess(
        self, output: np.ndarray[Any, Any], image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        """`scores`: {"nsfw": p, "sfw": 1 - p} from the softmax row (sfw, nsfw)."""
        nsfw = min(max(float(np.asarray(output).reshape(-1)[1]), 0.0), 1.0)
        return {"scores": ScoresOutput(scores={"nsfw": nsfw, "sfw": 1.0 - nsfw})}
