"""A task for the CPU-process tests: `tiny`, except that a 13-pixel-wide image kills the
process that preprocesses it, as a decoder's crash would, and a 17-pixel-wide one takes
`SLOW_S` and a 19-pixel-wide one `SLOWER_S` (so that a test can act while the process
works)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from PIL import Image

from function.models.tiny import TinyTask

CRASH_WIDTH = 13
SLOW_WIDTH = 17
SLOW_S = 0.1
SLOWER_WIDTH = 19  # takes SLOWER_S
SLOWER_S = 1.0


class CrashingTask(TinyTask):
    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        if image.width == CRASH_WIDTH:
            os._exit(3)
        if image.width == SLOW_WIDTH:
            time.sleep(SLOW_S)
        if image.width == SLOWER_WIDTH:
            time.sleep(SLOWER_S)
        return super().preprocess(image)


class SlowStartingTask(CrashingTask):
    """Takes `SLOWER_S` x 5 to build in a CPU process (whose `sys.argv[0]` is `-c`)."""

    def __init__(self) -> None:
        if sys.argv[:1] == ["-c"]:
            time.sleep(5 * SLOWER_S)
        super().__init__()
