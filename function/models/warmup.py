"""Loading and warming the model before a worker reports ready.

Phases are timed (`fetch`, `prepare`, `session`, `warmup`, `hooks`) and exported as
cold-start metrics. The session gets the threads the process's CPU quota allows
(`hardware`); unless set, the runners come from the same quota and the batch size from
timing candidates on the real session (`tuning`), which is also the warmup; with
`SURGE_WARMUP_BATCH_SIZES` set, warmup runs those sizes, and with `SURGE_MAX_BATCH` set,
batch 1 and then, unless jobs are already waiting, `max_batch`. Then the
user's warmup hooks: callables given to `Function.add_warmup_hook`, named in
`SURGE_WARMUP_HOOKS` (`module:callable`), or the built-in `SURGE_WARMUP_DIR` hook that
runs representative images from a folder.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from function.contract.errors import BadInput, SurgeError
from function.contract.settings import WorkerSettings
from function.contract.wire import ModelInfo, Output
from function.models.hardware import parallelism, usable_cpus
from function.models.imaging import decode_image
from function.models.loader import LoadedModel, load_model
from function.models.registry import load_task
from function.models.tuning import tuned_batch

__all__ = [
    "FAST_RUNS",
    "FAST_RUN_MS",
    "SLOW_RUNS",
    "SLOW_RUN_MS",
    "ModelAdapter",
    "Warmed",
    "WarmupHook",
    "effective_max_batch",
    "folder_hook",
    "load_and_warm",
    "resolve_hooks",
]

log = logging.getLogger("surge.warmup")

FAST_RUN_MS = 0.5  # a model run shorter than this is cheaper inline than in a thread
SLOW_RUN_MS = 4 * FAST_RUN_MS  # runs longer than this (SLOW_RUNS in a row) go to a thread
FAST_RUNS = 2  # full batches in a row under FAST_RUN_MS that make a model fast
SLOW_RUNS = 3

WarmupHook = Callable[[LoadedModel], None]


class ModelAdapter:
    """Presents a `LoadedModel` as the consumer's `BatchModel`. It is `fast` (run inline
    on the event loop) when every warm run, a full batch of `max_batch` among them, took
    under `FAST_RUN_MS`; a model timed on smaller batches only is not. Every run it
    serves is timed too: `FAST_RUNS` full batches in a row under `FAST_RUN_MS` make a
    model on the CPU fast (a worker that started on waiting jobs warmed batch 1 only; on
    a GPU a batch size not seen yet may build kernels or engines, never on the loop), and
    `SLOW_RUNS` runs in a row over `SLOW_RUN_MS` (inputs grew, the machine got busy) take
    any model back off the loop."""

    def __init__(self, loaded: LoadedModel, warmup_ms: dict[int, float], max_batch: int) -> None:
        self.loaded = loaded
        self.info: ModelInfo = loaded.info
        self.max_batch = max_batch
        full_batch_timed = bool(warmup_ms) and max(warmup_ms) >= max_batch
        self.fast = full_batch_timed and max(warmup_ms.values()) < FAST_RUN_MS
        self._may_turn_fast = loaded.info.providers[:1] == ["CPUExecutionProvider"]
        self._quick = self._slow = 0  # full batches under the bar, runs over it, in a row

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        return self.loaded.task.check_outputs(requested)

    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None:
        return self.loaded.task.decode_size(outputs)

    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int:
        return self.loaded.task.postprocess_pixels(size, outputs)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.loaded.task.preprocess(image)

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        start = time.perf_counter_ns()
        out = self.loaded.run_batch(samples)
        self._judge(len(samples), (time.perf_counter_ns() - start) / 1e6)
        return out

    def _judge(self, size: int, ms: float) -> None:
        """Whether runs like this one belong on the event loop (see the class); runners
        call it from their threads, so the counts are approximate, never wrong in kind."""
        self._slow = self._slow + 1 if ms > SLOW_RUN_MS else 0
        quick = size >= self.max_batch and ms < FAST_RUN_MS
        self._quick = self._quick + 1 if quick else 0
        if self.fast and self._slow >= SLOW_RUNS:
            self.fast = False
            log.info("model runs go to a thread: %d took over %g ms", SLOW_RUNS, SLOW_RUN_MS)
        elif not self.fast and self._may_turn_fast and self._quick >= FAST_RUNS:
            self.fast = True
            log.info(
                "model runs go inline: %d full batches took under %g ms", FAST_RUNS, FAST_RUN_MS
            )

    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        return self.loaded.task.postprocess(row, image, outputs)


def effective_max_batch(settings: WorkerSettings, loaded: LoadedModel) -> int:
    """`max_batch`, capped by a model whose batch axis is fixed."""
    return min(settings.max_batch, loaded.max_batch or settings.max_batch)


def folder_hook(folder: Path, max_pixels: int) -> WarmupHook:
    """A hook that runs every image in `folder` through the model once."""

    def run(loaded: LoadedModel) -> None:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            try:
                image = decode_image(path.read_bytes(), None, max_pixels=max_pixels)
            except BadInput as exc:
                log.warning("warmup skips %s: %s", path.name, exc.message)
                continue
            row = loaded.run_batch([loaded.task.preprocess(image)])[0]
            loaded.task.postprocess(row, image, loaded.task.check_outputs(()))

    return run


def resolve_hooks(refs: Iterable[str]) -> list[WarmupHook]:
    """Import `module:callable` warmup hooks."""
    hooks = []
    for ref in refs:
        module, _, name = ref.partition(":")
        try:
            hook = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise SurgeError(f"cannot load warmup hook {ref!r}: {exc}") from exc
        hooks.append(hook)
    return hooks


class Warmed(NamedTuple):
    """A loaded, warm model; ms per warmup batch; the settings it runs with (runners,
    threads and max_batch resolved)."""

    model: LoadedModel
    warmup_ms: dict[int, float]
    settings: WorkerSettings


def load_and_warm(
    settings: WorkerSettings,
    hooks: Iterable[WarmupHook],
    phases: dict[str, float],
    jobs_waiting: Callable[[], bool] = lambda: False,
) -> Warmed:
    """Fetch, prepare, open the session, choose or warm the batch sizes, run hooks
    (blocking). With `jobs_waiting()` true once the session is open, those jobs warm
    it: a batch size kept from an earlier start needs no synthetic run, and a
    `max_batch` set explicitly warms batch 1 only (a worker's first batch is one job)."""
    task = load_task(settings.function, settings.task)
    cpus = usable_cpus()
    cpu_plan = parallelism(
        cpus, gpu=False, runners=settings.runners, threads=settings.intra_op_threads
    )
    loaded = load_model(
        task,
        cache_dir=settings.model_dir,
        model_path=settings.model_path,
        providers=settings.providers,
        intra_op_threads=cpu_plan.threads,
        phases=phases,
    )
    on_gpu = loaded.info.providers[:1] != ["CPUExecutionProvider"]
    plan = parallelism(
        cpus, gpu=on_gpu, runners=settings.runners, threads=settings.intra_op_threads
    )
    max_batch = effective_max_batch(settings, loaded)
    tune = settings.warmup_batch_sizes is None and "max_batch" not in settings.model_fields_set
    cached = False
    waiting = tune and jobs_waiting()  # (a wait for NATS, not timed as warmup)
    start = time.perf_counter()
    if tune:
        choice, cached = tuned_batch(
            loaded,
            plan.runners,
            cpu_plan.threads,
            max_batch,
            settings.model_dir,
            warm=not waiting,
        )
        max_batch = choice.max_batch
        warmup_ms = {size: ms * size for size, ms in choice.per_image_ms.items()}  # per batch
    elif settings.warmup_batch_sizes is not None:
        warmup_ms = loaded.warmup(settings.warmup_batch_sizes)
    else:  # batch 1 while NATS connects; the full batch only if no jobs will warm it
        warmup_ms = loaded.warmup([1])
        if max_batch > 1:
            paused = time.perf_counter()
            waiting = jobs_waiting()
            start += time.perf_counter() - paused  # the wait for NATS is not warmup
            if not waiting:
                warmup_ms |= loaded.warmup([max_batch])
    phases["warmup"] = time.perf_counter() - start
    update = {"runners": plan.runners, "intra_op_threads": cpu_plan.threads, "max_batch": max_batch}
    resolved = settings.model_copy(update=update)
    log.info(
        "%d usable CPUs%s: %d runner(s) x %d thread(s) on one session, max_batch %d%s",
        cpus,
        " and a GPU" if on_gpu else "",
        plan.runners,
        cpu_plan.threads,
        max_batch,
        f" (ms per image by batch size{' at an earlier start' if cached else ''}: "
        f"{_rounded(choice.per_image_ms)})"
        if tune
        else "",
    )
    if cached and waiting:
        log.info("no synthetic warm run: jobs are waiting, and their first batch warms the session")
    elif waiting and not tune:
        log.info("batch 1 warmed only: jobs are waiting, and their batches warm the rest")
    start = time.perf_counter()
    all_hooks = list(hooks) + resolve_hooks(settings.warmup_hooks)
    if settings.warmup_dir is not None:
        all_hooks.append(folder_hook(settings.warmup_dir, settings.max_pixels))
    for hook in all_hooks:
        hook(loaded)
    phases["hooks"] = time.perf_counter() - start
    return Warmed(loaded, warmup_ms, resolved)


def _rounded(values: dict[int, float]) -> dict[int, float]:
    return {key: round(value, 1) for key, value in values.items()}
