"""Choosing the batch size on the real session, at warmup.

With `runners` concurrent runs (as the worker will use), each batch size from 1 upward
(doubling, up to `max_batch`) is run once to warm its shape and once timed; the climb
stops at the first size that does not cut the time per image by `MIN_GAIN`. On a CPU
larger batches rarely pay (U^2-Net-p costs more per image at 8 than at 1), so the
climb ends after two sizes; on a GPU it goes on while batching pays.

The choice is kept in the model cache (`tuning/<key>.json`, the key naming the model
version, providers, runners, threads and the largest batch allowed), so later starts on
the same kind of machine warm only the chosen size, once per runner, or not at all when
jobs are already waiting: their first batch warms the session, sooner than a synthetic
run followed by theirs.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from function.models.loader import LoadedModel

__all__ = ["MIN_GAIN", "BatchChoice", "choose_batch", "tuned_batch"]

log = logging.getLogger("surge.tuning")

MIN_GAIN = 0.10  # a larger batch must cut the time per image by at least this much


class BatchChoice(NamedTuple):
    """The batch size chosen, and ms per image measured at each size tried."""

    max_batch: int
    per_image_ms: dict[int, float]


def _run_concurrently(
    pool: ThreadPoolExecutor, loaded: LoadedModel, sample: np.ndarray, size: int, runs: int
) -> float:
    """Seconds for `runs` batches of `size` run at once on the shared session."""
    start = time.perf_counter()
    list(pool.map(lambda _: loaded.run_batch([sample] * size), range(runs)))
    return time.perf_counter() - start


def choose_batch(loaded: LoadedModel, runners: int, max_batch: int) -> BatchChoice:
    """The size (<= `max_batch`) with the least time per image, found by climbing."""
    sample = loaded.task.preprocess(loaded.task.warmup_image())
    sizes = [2**k for k in range(max_batch.bit_length()) if 2**k < max_batch] + [max_batch]
    per_image: dict[int, float] = {}
    best = 1
    with ThreadPoolExecutor(runners, thread_name_prefix="surge-tune") as pool:
        for size in sizes:
            _run_concurrently(pool, loaded, sample, size, runners)  # warm this shape
            seconds = _run_concurrently(pool, loaded, sample, size, runners)
            per_image[size] = seconds * 1000 / (runners * size)
            if size > 1 and per_image[size] > per_image[best] * (1 - MIN_GAIN):
                break
            best = size
    return BatchChoice(best, per_image)


def _key(loaded: LoadedModel, runners: int, threads: int, max_batch: int) -> str:
    providers = "+".join(p.removesuffix("ExecutionProvider").lower() for p in loaded.info.providers)
    return f"{loaded.info.version}-{providers}-r{runners}-t{threads}-b{max_batch}"


def _read(path: Path) -> BatchChoice | None:
    try:
        data = json.loads(path.read_text())
        choice = BatchChoice(
            int(data["max_batch"]), {int(k): float(v) for k, v in data["per_image_ms"].items()}
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return choice if choice.max_batch >= 1 else None


def tuned_batch(
    loaded: LoadedModel,
    runners: int,
    threads: int,
    max_batch: int,
    cache_dir: Path,
    *,
    warm: bool = True,
) -> tuple[BatchChoice, bool]:
    """The batch size from an earlier start's choice (warming only that size, unless not
    to `warm`), or chosen now and kept; True when it came from the cache."""
    path = cache_dir / "tuning" / f"{_key(loaded, runners, threads, max_batch)}.json"
    cached = _read(path)
    if cached is not None and cached.max_batch <= max_batch and not warm:
        return cached, True
    if cached is not None and cached.max_batch <= max_batch:
        sample = loaded.task.preprocess(loaded.task.warmup_image())
        with ThreadPoolExecutor(runners, thread_name_prefix="surge-warm") as pool:
            _run_concurrently(pool, loaded, sample, cached.max_batch, runners)
        return cached, True
    choice = choose_batch(loaded, runners, max_batch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"max_batch": choice.max_batch, "per_image_ms": choice.per_image_ms}
        path.write_text(json.dumps(body))
    except OSError as exc:  # a read-only cache: choose again next time
        log.warning("could not keep the batch choice in %s: %r", path, exc)
    return choice, False
