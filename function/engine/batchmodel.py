"""`BatchModel`: what the job path needs from a loaded model, and `run_in`, its one
thread hop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, Protocol, TypeVar

import numpy as np
from PIL import Image

from function.contract.wire import ModelInfo, Output

__all__ = ["BatchModel", "run_in"]

P = ParamSpec("P")
T = TypeVar("T")


class BatchModel(Protocol):
    """A loaded model as the job path sees it; `fast` when a run costs less than a
    thread hop (measured at warmup and on the batches it serves: it may change while
    the worker runs, so read it at each use), so it runs on the event loop."""

    @property
    def info(self) -> ModelInfo: ...
    @property
    def fast(self) -> bool: ...
    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]: ...
    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None: ...
    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int: ...
    def preprocess(self, image: Image.Image) -> np.ndarray: ...
    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray: ...
    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]: ...


async def run_in(
    pool: ThreadPoolExecutor, inline: bool, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run `fn` in `pool`, or right here when that is cheaper than the thread hop."""
    if inline:
        return fn(*args, **kwargs)
    call = functools.partial(fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
