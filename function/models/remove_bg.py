"""Background removal with U²-Net-p (`remove-bg`): a mask, and optionally a cutout."""

from __future__ import annotations

from typing import Any, ClassVar, Final

import numpy as np
from PIL import Image

from function.jobs import Output
from function.models.base import Task, image_output

__all__ = ["RemoveBackground"]

_SIZE: Final = 320
_MEAN: Final = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD: Final = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class RemoveBackground(Task):
    """U²-Net-p salient-object mask at 320x320, scaled back to the input size."""

    name: ClassVar[str] = "remove-bg"
    model_name: ClassVar[str] = "u2netp"
    default_outputs: ClassVar[tuple[str, ...]] = ("mask",)
    allowed_outputs: ClassVar[frozenset[str]] = frozenset({"mask", "cutout"})
    output_name: ClassVar[str | None] = "1959"

    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """RGB at 320x320, scaled by its maximum, ImageNet-normalised, CHW float32."""
        small = image.convert("RGB").resize((_SIZE, _SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(small, dtype=np.float32)
        pixels /= max(float(pixels.max()), 1e-6)
        normalised = (pixels - _MEAN) / _STD
        return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)

    def mask(self, output: np.ndarray[Any, Any], size: tuple[int, int]) -> Image.Image:
        """The L-mode mask for one output row (1, H, W), min-max scaled, at `size`."""
        saliency = np.asarray(output, dtype=np.float32)[0]
        low, high = float(saliency.min()), float(saliency.max())
        scaled = (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)
        mask = Image.fromarray(np.round(scaled * 255.0).astype(np.uint8))
        return mask.resize(size, Image.Resampling.BILINEAR)

    def postprocess(
        self, output: np.ndarray[Any, Any], image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        """`mask`: greyscale PNG; `cutout`: the input as RGBA PNG with the mask as alpha."""
        mask = self.mask(output, image.size)
        result: dict[str, Output] = {}
        if "mask" in outputs:
            result["mask"] = image_output(mask)
        if "cutout" in outputs:
            cutout = image.convert("RGB")
            cutout.putalpha(mask)
            result["cutout"] = image_output(cutout)
        return result
