"""A task for the CPU-process tests: `tiny`, except that a 13-pixel-wide image kills the
process that preprocesses it, as a decoder's crash would, and a 17-pixel-wide one takes
`SLOW_S` (so that a test can kill the process while it works)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from PIL import Image

from function.models.tiny import TinyTask

CRASH_WIDTH = 13
SLOW_WIDTH = 17
SLOW_S = 0.1


class CrashingTask(TinyTask):
    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        if image.width == CRASH_WIDTH:
            os._exit(3)
        if image.width == SLOW_WIDTH:
            time.sleep(SLOW_S)
        return super().preprocess(image)
