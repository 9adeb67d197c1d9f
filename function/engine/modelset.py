"""`ModelSet`: the model versions a worker serves, which one each job runs on, and how
the canary fares.

The job path holds one `ModelSet` as its `BatchModel`: decoding, pre- and postprocessing
and direct (HTTP) jobs use the stable version; `split` cuts a batch into one part per
version, each job pinned by a hash of its id (a redelivered job meets the same version
while the rollout stands). `serve` swaps versions between batches: a batch that already
took its model keeps it, and a dropped session goes when the last such batch is done.

`VersionedSettler` names in each result the version that ran the job, and counts the
outcomes of both versions while a canary serves: past `min_jobs` canary jobs whose error
rate is over the stable version's (in the same time) by more than `max_error_rate`, the
canary stops serving here at once and `on_failing(version, reason)` is called (once) so
that the rollback is written for every worker. Failures both versions share (a GPU out of
memory, a bad input source) are not the canary's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from function.contract.rollout import routes_to_canary
from function.contract.wire import ModelInfo, Output, Result, Timings
from function.engine.batchmodel import BatchModel
from function.engine.inflight import InFlightJob
from function.engine.settle import Settler, Succeeded

__all__ = ["ModelSet", "Serving", "VersionedSettler"]

log = logging.getLogger("surge.modelset")


class Serving(NamedTuple):
    """What serves now: swapped as a whole, never field by field."""

    stable: BatchModel
    canary: BatchModel | None = None
    share: float = 0.0


class ModelSet:
    """One or two model versions presented as one `BatchModel` (the stable one's face)."""

    def __init__(
        self, stable: BatchModel, *, max_error_rate: float = 0.2, min_jobs: int = 20
    ) -> None:
        self.serving = Serving(stable)
        self.max_error_rate = max_error_rate
        self.min_jobs = min_jobs
        self.on_failing: Callable[[str, str], None] | None = None
        self.on_stable: Callable[[str], None] | None = None  # a new stable version's
        self._ok = self._errors = 0  # the canary's first attempts
        self._stable_ok = self._stable_errors = 0  # the stable version's, meanwhile
        self._failed: set[str] = set()  # canary versions this worker gave up on

    # -- the stable version's face (same task for every version) -------------------------

    @property
    def info(self) -> ModelInfo:
        return self.serving.stable.info

    @property
    def fast(self) -> bool:
        return self.serving.stable.fast

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        return self.serving.stable.check_outputs(requested)

    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None:
        return self.serving.stable.decode_size(outputs)

    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int:
        return self.serving.stable.postprocess_pixels(size, outputs)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.serving.stable.preprocess(image)

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        return self.serving.stable.run_batch(samples)

    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        return self.serving.stable.postprocess(row, image, outputs)

    # -- versions -------------------------------------------------------------------------

    @property
    def versions(self) -> list[str]:
        """Versions serving now: the stable one first."""
        serving = self.serving
        found = [serving.stable.info.version]
        return found + ([serving.canary.info.version] if serving.canary else [])

    def serve(
        self, stable: BatchModel, canary: BatchModel | None = None, share: float = 0.0
    ) -> None:
        """Swap what serves (between batches: running batches keep the model they took)."""
        old = self.serving.canary
        if canary is not None and canary.info.version in self._failed:
            canary = None  # this worker saw it fail; the rollback is on its way
        if canary is None or old is None or old.info.version != canary.info.version:
            self._ok = self._errors = self._stable_ok = self._stable_errors = 0
        before = (self.versions, self.serving.share)
        self.serving = Serving(stable, canary, share if canary is not None else 0.0)
        if self.on_stable is not None:
            self.on_stable(stable.info.version)
        if (self.versions, self.serving.share) != before:
            log.info(
                "serving %s%s",
                stable.info.version,
                f" and canary {canary.info.version} at {share:.1%}" if canary else "",
            )

    def forget_failures(self) -> None:
        """Serve again a canary this worker gave up on, should a new rollout name it."""
        self._failed.clear()

    def pick(self, job_id: str) -> BatchModel:
        """The version `job_id` runs on now."""
        serving = self.serving
        if serving.canary is not None and routes_to_canary(job_id, serving.share):
            return serving.canary
        return serving.stable

    def on_stable_version(self, job_id: str) -> bool:
        """Whether `job_id` runs on the stable version now (not the canary)."""
        return self.pick(job_id) is self.serving.stable

    def split(self, batch: Sequence[InFlightJob]) -> list[tuple[BatchModel, list[InFlightJob]]]:
        """`batch` in one part per version (stable first), each job pinned to its model.
        A canary's results are never remembered in the result cache (keyed by the stable
        version), nor its jobs answered from it (`on_stable_version`, at admission)."""
        parts: dict[int, tuple[BatchModel, list[InFlightJob]]] = {}
        for job in batch:
            job.model = self.pick(job.job_id)
            if job.model is not self.serving.stable:
                job.cache_key = None
            parts.setdefault(id(job.model), (job.model, []))[1].append(job)
        return sorted(parts.values(), key=lambda part: part[0] is not self.serving.stable)

    # -- the canary's outcomes ------------------------------------------------------------

    def record(self, job: InFlightJob, ok: bool) -> None:
        """Count the outcome of a job that ran; act when the canary fails too often."""
        canary = self.serving.canary
        if canary is None or job.attempts > 1:
            return  # each job counts once: its first attempt's outcome
        if job.model is self.serving.stable:
            self._stable_ok += ok
            self._stable_errors += not ok
            return
        if job.model is not canary:
            return
        self._ok += ok
        self._errors += not ok
        total, stable_total = self._ok + self._errors, self._stable_ok + self._stable_errors
        stable_rate = self._stable_errors / stable_total if stable_total else 0.0
        if total < self.min_jobs or self._errors / total - stable_rate <= self.max_error_rate:
            return
        version = canary.info.version
        reason = (
            f"canary {version} failed {self._errors} of {total} jobs "
            f"(over {self.max_error_rate:.0%} more than the stable version's "
            f"{self._stable_errors} of {stable_total})"
        )
        log.warning("rolling back: %s", reason)
        self._failed.add(version)
        self.serve(self.serving.stable)
        if self.on_failing is not None:
            self.on_failing(version, reason)


class VersionedSettler(Settler):
    """A `Settler` whose results name the version that ran each job, and that counts the
    canary's outcomes in its `ModelSet`."""

    def __init__(self, models: ModelSet, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._models = models

    def _result(self, job: InFlightJob, timings: Timings, **fields: object) -> Result:
        result = super()._result(job, timings, **fields)
        result.model = job.model.info if job.model is not None else self._models.info
        return result

    async def succeed_all(self, done: Sequence[Succeeded]) -> list[tuple[InFlightJob, Exception]]:
        failed = await super().succeed_all(done)
        unsettled = {id(job) for job, _ in failed}
        for job, _, _ in done:
            if id(job) not in unsettled:
                self._models.record(job, ok=True)
        return failed

    async def retry_or_dead_letter(self, job: InFlightJob, error: Exception) -> None:
        self._models.record(job, ok=False)
        await super().retry_or_dead_letter(job, error)
