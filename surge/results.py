"""Typed results: `JobResult` wraps the wire `Result` with its outputs ready to use.

    result = job.result(timeout=60)
    if result.ok:
        result.mask.save("mask.png")          # a PIL image (remove-bg)
        png = result.image_bytes("mask")      # the same, encoded
    else:
        print(result.code, result.error.message)

Image outputs stored by Object Store reference are fetched when the result is built,
so every accessor here is plain (no I/O, nothing to await).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from PIL import Image

from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobState, state_of_result
from function.contract.wire import (
    ErrorInfo,
    ImageOutput,
    JobStatus,
    ModelInfo,
    Result,
    ScoresOutput,
    Timings,
)
from surge.errors import MissingOutput, job_failure

__all__ = ["BlobReader", "JobResult", "typed_result"]

BlobReader = Callable[[ImageOutput], Awaitable[bytes]]


class JobResult:
    """One job's final result: its state, error or outputs (images decoded on demand)."""

    def __init__(self, result: Result, images: Mapping[str, bytes]) -> None:
        self.raw = result
        self._images = dict(images)

    def __repr__(self) -> str:
        detail = f"outputs={sorted(self.raw.outputs)}" if self.ok else f"code={self.code}"
        return f"<JobResult {self.job_id} {self.state.value} {detail}>"

    # -- what happened ------------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.raw.job_id

    @property
    def function(self) -> str:
        return self.raw.function

    @property
    def ok(self) -> bool:
        return self.raw.status is JobStatus.OK

    @property
    def state(self) -> JobState:
        """done, failed, cancelled or expired."""
        return state_of_result(self.raw)

    @property
    def error(self) -> ErrorInfo | None:
        return self.raw.error

    @property
    def code(self) -> ErrorCode | None:
        return self.raw.error.code if self.raw.error is not None else None

    @property
    def model(self) -> ModelInfo | None:
        return self.raw.model

    @property
    def timings(self) -> Timings:
        return self.raw.timings

    @property
    def finished_at(self) -> datetime:
        return self.raw.finished_at

    @property
    def outputs(self) -> list[str]:
        """The names of its outputs (e.g. `["mask"]`)."""
        return sorted(self.raw.outputs)

    def raise_for_error(self) -> JobResult:
        """This result if ok; else raise `JobFailed`, `JobCancelled` or `JobExpired`."""
        if not self.ok:
            raise job_failure(self.raw)
        return self

    # -- outputs ------------------------------------------------------------------------

    def image_bytes(self, name: str) -> bytes:
        """The encoded bytes (PNG) of image output `name`."""
        self.raise_for_error()
        if name not in self._images:
            raise MissingOutput(self._missing(name, "image"))
        return self._images[name]

    def image(self, name: str) -> Image.Image:
        """Image output `name` as a decoded PIL image."""
        image = Image.open(io.BytesIO(self.image_bytes(name)))
        image.load()  # decoded now: a bad image fails here, not at first use
        return image

    def scores(self, name: str = "scores") -> dict[str, float]:
        """Scores output `name` (e.g. `{"mean": 0.4}` from `tiny`)."""
        self.raise_for_error()
        output = self.raw.outputs.get(name)
        if not isinstance(output, ScoresOutput):
            raise MissingOutput(self._missing(name, "scores"))
        return dict(output.scores)

    @property
    def mask(self) -> Image.Image:
        """remove-bg's mask: greyscale, the input's size (white: the subject)."""
        return self.image("mask")

    @property
    def cutout(self) -> Image.Image:
        """remove-bg's cutout (ask for it: `outputs=("cutout",)`): RGBA, the mask as alpha."""
        return self.image("cutout")

    def _missing(self, name: str, kind: str) -> str:
        have = ", ".join(f"{n} ({o.kind})" for n, o in sorted(self.raw.outputs.items()))
        return f"job {self.job_id} has no {kind} output {name!r}; it has: {have or 'none'}"


async def typed_result(result: Result, read_blob: BlobReader) -> JobResult:
    """A `JobResult` with every image output's bytes at hand (references are read)."""
    images: dict[str, bytes] = {}
    for name, output in result.outputs.items():
        if isinstance(output, ImageOutput):
            if output.data is not None:
                images[name] = base64.b64decode(output.data)
            elif output.ref is not None:
                images[name] = await read_blob(output)
    return JobResult(result, images)
