"""A task for the CPU-process tests: `tiny`, except that a 13-pixel-wide image kills the
process that preprocesses it, as a decoder's crash would."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from function.models.tiny import TinyTask

CRASH_WIDTH = 13


class CrashingTask(TinyTask):
    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        if image.width == CRASH_WIDTH:
            os._exit(3)
        return super().preprocess(image)
