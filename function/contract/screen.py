"""`Screen`: a cheaper function run on a job's image before the main model (`SURGE_SCREEN`).

Written `function:score<op>threshold`, e.g. ``nsfw:nsfw>0.8``: run `nsfw` on the image,
read its `nsfw` score, and reject the job (`content_rejected`) when the score is over
0.8. The comparison is one of ``>``, ``>=``, ``<``, ``<=`` and says when to reject.

Through the queue (`SURGE_SCREEN_VIA=queue`, when both models do not fit one worker), a
job's input goes to the screen function first as a *screen job*, whose id
(`screen_job_id`) is bound to the job's id and its bytes.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections.abc import Callable
from typing import Final, Literal, Self, cast

from pydantic import BaseModel, ConfigDict

__all__ = ["SCREEN_FORMAT", "Screen", "input_sha256", "screen_job_id"]

Comparison = Literal[">", ">=", "<", "<="]
_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
SCREEN_FORMAT: Final = "function:score<op>threshold, e.g. nsfw:nsfw>0.8 (op: >, >=, <, <=)"
_PATTERN: Final = re.compile(
    r"^(?P<function>[a-z0-9][a-z0-9_-]{0,62}):(?P<score>[A-Za-z0-9_.-]{1,64})"
    r"(?P<op>>=|<=|>|<)(?P<threshold>[-+0-9.eE]{1,32})$"
)


class Screen(BaseModel):
    """Which function screens jobs, which of its scores it reads, and when it rejects."""

    model_config = ConfigDict(frozen=True)

    function: str
    score: str
    op: Comparison
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Self:
        """A screen from `function:score<op>threshold` (spaces ignored); `ValueError` with
        the expected form otherwise."""
        found = _PATTERN.match("".join(text.split()))
        if found is None:
            raise ValueError(f"not a screen; write it as {SCREEN_FORMAT}")
        try:
            threshold = float(found["threshold"])
        except ValueError:
            raise ValueError(f"threshold {found['threshold']!r} is not a number") from None
        if not math.isfinite(threshold):
            raise ValueError(f"threshold {found['threshold']!r} is not a finite number")
        op = cast(Comparison, found["op"])  # the pattern allows only these
        return cls(function=found["function"], score=found["score"], op=op, threshold=threshold)

    def rejects(self, score: float) -> bool:
        """Whether a job with this score is rejected (a NaN score is)."""
        return math.isnan(score) or _COMPARE[self.op](score, self.threshold)

    @property
    def rule(self) -> str:
        """The rejection rule, e.g. `nsfw>0.8`."""
        return f"{self.score}{self.op}{self.threshold:g}"

    def __str__(self) -> str:
        return f"{self.function}:{self.rule}"


def input_sha256(payload: bytes) -> str:
    """An input's digest (hex), as a screen job's result names it."""
    return hashlib.sha256(payload).hexdigest()


def screen_job_id(job_id: str, digest: str) -> str:
    """The screen job of a job whose input has `digest` (`input_sha256`): one per job id
    and input, so a stored screen result speaks for those bytes only (another input under
    the same id is screened again)."""
    joined = job_id.encode() + b"\0" + bytes.fromhex(digest)
    return "screen-" + hashlib.sha256(joined).hexdigest()[:40]
