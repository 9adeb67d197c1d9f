"""Screening before work (`SURGE_SCREEN`): a cheaper model scores each job's decoded image
before the main model, in the same worker; a job its rule rejects is failed
`content_rejected` with the score and never reaches a batch.

The screen's model is loaded beside the main one (`load_screen`) and run once on its task's
warmup image, which also checks that it gives the named score. Each job is screened
alone (a batch of one) in the CPU pool, under a `screen` span of the job's, on the image
the job decoded (never reduced below what the screen's task needs).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.trace import Span
from PIL import Image

from function.contract.errors import ErrorCode, JobError, SurgeError
from function.contract.screen import Screen
from function.contract.settings import WorkerSettings
from function.contract.wire import Output, ScoresOutput
from function.engine.batchmodel import run_in
from function.models.loader import LoadedModel, load_model
from function.models.registry import load_task
from function.telemetry import METRICS

__all__ = ["ScreenError", "Screening", "load_screen", "rejection", "score_in"]

_tracer = trace.get_tracer("surge")


class ScreenError(SurgeError):
    """A screen that cannot run: its function does not load or gives no such score."""


def score_in(outputs: Mapping[str, Output], screen: Screen) -> float:
    """The score `screen` reads among a screen function's outputs; `ScreenError` when
    they have none of that name."""
    found = [o.scores for o in outputs.values() if isinstance(o, ScoresOutput)]
    for scores in found:
        if screen.score in scores:
            return float(scores[screen.score])
    names = ", ".join(sorted({key for scores in found for key in scores})) or "none"
    raise ScreenError(f"screen {screen.function} gives no score {screen.score!r} (its: {names})")


def rejection(screen: Screen, score: float) -> JobError:
    """The `content_rejected` error of a job `screen` rejects with `score`."""
    return JobError(
        ErrorCode.CONTENT_REJECTED,
        f"rejected by the {screen.function} screen: {screen.score}={score:.4g} "
        f"(rejected when {screen.rule})",
    )


class Screening:
    """Scores images with the screen's model and rejects jobs by its rule."""

    def __init__(self, screen: Screen, model: LoadedModel, function: str) -> None:
        self.screen = screen
        self.model = model
        self._outputs = model.task.check_outputs(())
        self._passed = METRICS.screened.labels(function, "passed")
        self._rejected = METRICS.screened.labels(function, "rejected")

    def decode_size(self, main: tuple[int, int] | None) -> tuple[int, int] | None:
        """The smallest decoded image both the main task (`main`) and the screen need."""
        own = self.model.task.decode_size(self._outputs)
        if main is None or own is None:
            return None
        return (max(main[0], own[0]), max(main[1], own[1]))

    def score(self, image: Image.Image) -> float:
        """The screen's score for `image` (blocking: one model run)."""
        task = self.model.task
        row = self.model.run_batch([task.preprocess(image)])[0]
        return score_in(task.postprocess(row, image, self._outputs), self.screen)

    async def check(self, image: Image.Image, pool: ThreadPoolExecutor, parent: Span) -> None:
        """Score `image` in `pool`; raise `JobError(content_rejected)` when the rule rejects it."""
        context = trace.set_span_in_context(parent)
        with _tracer.start_as_current_span("screen", context=context) as span:
            score = await run_in(pool, False, self.score, image)
            rejected = self.screen.rejects(score)
            span.set_attribute("surge.screen", str(self.screen))
            span.set_attribute("surge.screen.score", score)
            span.set_attribute("surge.screen.rejected", rejected)
        if not rejected:
            self._passed.inc()
            return
        self._rejected.inc()
        raise rejection(self.screen, score)


def load_screen(screen: Screen, settings: WorkerSettings) -> Screening:
    """Load the screen's model as the main one is (cache, providers, threads) and run it
    once (blocking); `ScreenError` when it does not load or lacks the score."""
    try:
        task = load_task(screen.function)
    except SurgeError as exc:
        raise ScreenError(f"SURGE_SCREEN {screen}: {exc}") from None
    model = load_model(
        task,
        cache_dir=settings.model_dir,
        providers=settings.providers,
        intra_op_threads=max(1, settings.intra_op_threads),
    )
    screening = Screening(screen, model, settings.function)
    try:
        screening.score(task.warmup_image())
    except ScreenError as exc:
        raise ScreenError(f"SURGE_SCREEN {screen}: {exc}") from None
    return screening
