"""Model rollout records: which versions of a function's model exist and which serve.

One `ModelRollout` per function, JSON in the KV bucket `surge-models` (key: the function);
the model files in the Object Store bucket `surge-model-files` (name: `<function>/<version>`,
version: the first 16 hex of the file's sha256, as `ModelInfo.version`). The transitions
are pure: each returns a new record, or raises `RolloutError` with one line.

    record = ModelRollout(function="remove-bg").pushed(PushedVersion(version="ab12...", size=9))
    record = record.canary_of("ab12...", 0.1)    # 10% of jobs to ab12...
    record = record.promoted()                   # ab12... serves every job
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from function.contract.errors import SurgeError

__all__ = [
    "MAX_HISTORY",
    "MODELS_BUCKET",
    "MODEL_FILES_BUCKET",
    "ModelRollout",
    "PushedVersion",
    "RolloutError",
    "RolloutState",
    "canary_point",
    "model_object_name",
    "parse_share",
    "routes_to_canary",
]

MODELS_BUCKET: Final = "surge-models"  # KV: one `ModelRollout` per function
MODEL_FILES_BUCKET: Final = "surge-model-files"  # Object Store: `<function>/<version>`
MAX_HISTORY: Final = 20  # history lines kept per record
_VERSION = re.compile(r"^[0-9a-f]{16}$")


class RolloutError(SurgeError):
    """A rollout step that does not apply: an unknown version, no canary, a bad share."""


class RolloutState(StrEnum):
    STABLE = "stable"  # one version serves every job
    CANARY = "canary"  # a share of the jobs goes to the canary version


class PushedVersion(BaseModel):
    """One pushed model file."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(pattern=_VERSION.pattern, description="First 16 hex of its sha256.")
    size: int = Field(ge=0, description="Bytes.")
    source: str = Field(default="", max_length=256, description="The file name pushed.")
    pushed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ModelRollout(BaseModel):
    """A function's model versions and which of them serve its jobs.

    `stable` None: the model the worker was deployed with (its image) serves.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    function: str
    versions: list[PushedVersion] = Field(default_factory=list)
    stable: str | None = None
    canary: str | None = None
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0)
    reason: str | None = Field(default=None, description="Why the last rollback happened.")
    history: list[str] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def state(self) -> RolloutState:
        return RolloutState.CANARY if self.canary is not None else RolloutState.STABLE

    def version(self, version: str) -> PushedVersion:
        """The pushed version `version` (a unique prefix of at least 4 characters will do)."""
        found = [v for v in self.versions if v.version.startswith(version)] if version else []
        if len(version) < 4 or len(found) != 1:
            known = ", ".join(v.version for v in self.versions) or "none"
            raise RolloutError(
                f"{self.function} has no model version {version!r} (pushed: {known})"
            )
        return found[0]

    def _changed(self, line: str, **fields: object) -> ModelRollout:
        now = datetime.now(UTC)
        history = [*self.history, f"{now:%Y-%m-%dT%H:%M:%SZ} {line}"][-MAX_HISTORY:]
        return self.model_copy(update={**fields, "history": history, "updated_at": now})

    def pushed(self, pushed: PushedVersion) -> ModelRollout:
        """With `pushed` recorded (pushing the same file again changes nothing)."""
        if any(v.version == pushed.version for v in self.versions):
            return self
        return self._changed(f"pushed {pushed.version}", versions=[*self.versions, pushed])

    def canary_of(self, version: str, share: float) -> ModelRollout:
        """`share` (0..1] of the jobs to `version`, the rest to the stable one."""
        chosen = self.version(version).version
        if not 0.0 < share <= 1.0:
            raise RolloutError(f"canary share must be in (0, 100%], not {share:.0%}")
        if chosen == self.stable:
            raise RolloutError(f"{chosen} is already the stable version of {self.function}")
        line = f"canary {chosen} at {share:.1%}"
        return self._changed(line, canary=chosen, canary_share=share, reason=None)

    def promoted(self) -> ModelRollout:
        """The canary becomes the stable version: it serves every job."""
        if self.canary is None:
            raise RolloutError(f"no rollout in progress for {self.function}")
        return self._changed(
            f"promoted {self.canary}", stable=self.canary, canary=None, canary_share=0.0
        )

    def rolled_back(self, reason: str = "by hand") -> ModelRollout:
        """The canary is dropped: the stable version serves every job again."""
        if self.canary is None:
            raise RolloutError(f"no rollout in progress for {self.function}")
        line = f"rolled back {self.canary}: {reason}"
        return self._changed(line, canary=None, canary_share=0.0, reason=reason)


def model_object_name(function: str, version: str) -> str:
    """The Object Store name of one version's file."""
    return f"{function}/{version}"


def parse_share(text: str) -> float:
    """'10%', '10' or '0.1%' as a fraction of 1; `RolloutError` unless in (0, 100]."""
    try:
        percent = float(text.strip().removesuffix("%"))
    except ValueError:
        raise RolloutError(f"not a percentage: {text[:32]!r} (e.g. 10%)") from None
    if not 0.0 < percent <= 100.0:
        raise RolloutError(f"canary share must be in (0, 100%], not {text[:32]!r}")
    return percent / 100.0


def canary_point(job_id: str) -> float:
    """Where `job_id` falls in [0, 1): the same on every worker and every delivery."""
    digest = hashlib.sha256(job_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def routes_to_canary(job_id: str, share: float) -> bool:
    """Whether a job goes to the canary when `share` of them do."""
    return canary_point(job_id) < share
