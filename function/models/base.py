"""The Task contract: what a function does around its ONNX model.

A task turns one decoded image into one model input sample (no batch axis), and one row
of the batched model output back into named outputs. The loader stacks samples into a
batch, so a task never sees other jobs. Users bring their own task (``SURGE_TASK=
module:factory``) and, optionally, their own ONNX file (``SURGE_MODEL_PATH``).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from function.contract.errors import BadInput, ErrorCode
from function.contract.wire import ImageOutput, Output
from function.models.assets import MODELS, fetch
from function.models.imaging import encode_png

__all__ = ["Task", "image_output"]


def image_output(image: Image.Image) -> ImageOutput:
    """A PNG `ImageOutput` holding `image` inline (base64)."""
    data = base64.b64encode(encode_png(image)).decode("ascii")
    return ImageOutput(content_type="image/png", width=image.width, height=image.height, data=data)


class Task(ABC):
    """Pre- and post-processing for one function around one ONNX model."""

    name: ClassVar[str]
    model_name: ClassVar[str]
    default_outputs: ClassVar[tuple[str, ...]]
    allowed_outputs: ClassVar[frozenset[str]]
    output_name: ClassVar[str | None] = None

    def model_file(self, cache_dir: Path) -> Path:
        """The original ONNX file, fetched into `cache_dir` if needed."""
        if self.model_name not in MODELS:
            raise NotImplementedError(
                f"{type(self).__name__}: no built-in model {self.model_name!r}; "
                "override model_file() or set SURGE_MODEL_PATH"
            )
        return fetch([MODELS[self.model_name]], cache_dir)[self.model_name]

    def check_outputs(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The outputs to produce: `default_outputs` when none are asked for.

        Raises `BadInput(bad_envelope)` for an output this task does not know.
        """
        if not requested:
            return self.default_outputs
        for output in requested:
            if output not in self.allowed_outputs:
                choices = ", ".join(sorted(self.allowed_outputs))
                raise BadInput(
                    ErrorCode.BAD_ENVELOPE,
                    f"unknown output {output!r} for {self.name}; choose from {choices}",
                )
        return tuple(dict.fromkeys(requested))

    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None:
        """The smallest image `preprocess` and `postprocess` need for `outputs`, or None
        for full resolution (the default).

        With a size, the worker may hand over a smaller image than was sent (JPEG DCT
        scaling, or an integer box reduction), keeping each side at least twice this
        size's longer side; `function.models.imaging.source_size(image)` is then the size sent.
        """
        return None

    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int:
        """What `postprocess` and its outputs hold beyond the image, for an input of
        `size`, in pixels of 4 bytes (the worker admits jobs by these; see `PixelBudget`).

        The default assumes one output image at the input's size.
        """
        return size[0] * size[1]

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """One model input sample (float32, no batch axis) from a decoded image."""

    @abstractmethod
    def postprocess(
        self, output: np.ndarray[Any, Any], image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        """Named outputs from one sample's row of the model output."""

    def warmup_image(self) -> Image.Image:
        """A synthetic 320x320 RGB gradient for warming the model up."""
        ramp = np.linspace(0, 255, 320, dtype=np.float32)
        red = np.broadcast_to(ramp[None, :], (320, 320))
        green = np.broadcast_to(ramp[:, None], (320, 320))
        blue = np.full((320, 320), 128.0, dtype=np.float32)
        pixels = np.stack([red, green, blue], axis=-1).astype(np.uint8)
        return Image.fromarray(pixels)
