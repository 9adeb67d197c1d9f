"""Scheduled pre-warm plans for known campaigns, kept in the NATS KV bucket `surge-prewarm`.

    plan = PrewarmPlan.new("remove-bg", start=at, duration_s=600, rate=50)
    await store_plan(js, plan)           # what `surge prewarm --at ... --rate 50 --for 10m` does

The scaler reads the plans of each function it watches and raises demand from
`start - lead` (lead: measured cold start + margin) until the window ends. Keys are
`<function>.<plan id>`; plans that have ended are removed when a new one is stored.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyDeletedError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, model_validator

from function.contract.wire import as_utc
from scaler.policy import Window

__all__ = [
    "PREWARM_BUCKET",
    "PrewarmPlan",
    "delete_plan",
    "load_plans",
    "parse_at",
    "parse_duration",
    "store_plan",
]

PREWARM_BUCKET = "surge-prewarm"
_KV_STREAM = f"KV_{PREWARM_BUCKET}"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


class PrewarmPlan(BaseModel):
    """A campaign: from `start`, for `duration_s`, expect `rate` jobs/s (or want `replicas`)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    function: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    start: datetime
    duration_s: float = Field(gt=0)
    rate: float = Field(default=0.0, ge=0, description="Expected jobs/s.")
    replicas: int = Field(default=0, ge=0, description="Replicas wanted (overrides rate).")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="after")
    def _wants_something(self) -> PrewarmPlan:
        if self.rate <= 0 and self.replicas <= 0:
            raise ValueError("a plan needs a rate > 0 or replicas > 0")
        if self.start.tzinfo is None:
            raise ValueError("start must carry a time zone")
        return self

    @classmethod
    def new(
        cls,
        function: str,
        *,
        start: datetime,
        duration_s: float,
        rate: float = 0.0,
        replicas: int = 0,
    ) -> PrewarmPlan:
        """A plan with a fresh id."""
        return cls(
            id=uuid.uuid4().hex[:12],
            function=function,
            start=start,
            duration_s=duration_s,
            rate=rate,
            replicas=replicas,
        )

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.duration_s)

    @property
    def key(self) -> str:
        return f"{self.function}.{self.id}"

    def window(self) -> Window:
        start = self.start.timestamp()
        return Window(
            start=start, end=start + self.duration_s, rate=self.rate, replicas=self.replicas
        )


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1.5h`, `1d` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 10m, 1.5h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_at(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time (UTC when no zone is given), Unix seconds, or `+10m` from now."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text.startswith("+"):
        return now + timedelta(seconds=parse_duration(text[1:]))
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r}: use RFC 3339, Unix seconds or +10m") from None
    return as_utc(when)


async def _bucket(js: JetStreamContext, create: bool, replicas: int = 1) -> KeyValue | None:
    try:
        return await js.key_value(PREWARM_BUCKET)
    except BucketNotFoundError:
        if not create:
            return None
        return await js.create_key_value(bucket=PREWARM_BUCKET, history=1, replicas=replicas)


async def _keys(js: JetStreamContext, function: str) -> list[str]:
    """Keys of `function`'s plans, from the bucket stream's subjects (no consumer made)."""
    prefix = f"$KV.{PREWARM_BUCKET}."
    try:
        info = await js.stream_info(_KV_STREAM, subjects_filter=f"{prefix}{function}.*")
    except NotFoundError:
        return []
    return sorted(s[len(prefix) :] for s in (info.state.subjects or {}))


async def load_plans(js: JetStreamContext, function: str) -> list[PrewarmPlan]:
    """Every stored plan of `function` (ended ones included), oldest start first."""
    kv = await _bucket(js, create=False)
    if kv is None:
        return []
    plans = []
    for key in await _keys(js, function):
        try:
            entry = await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            continue
        if entry.value:
            plans.append(PrewarmPlan.model_validate_json(entry.value))
    return sorted(plans, key=lambda p: p.start)


async def store_plan(js: JetStreamContext, plan: PrewarmPlan, *, replicas: int = 1) -> None:
    """Store `plan` (creating the bucket with `replicas`) and purge its function's ended plans."""
    kv = await _bucket(js, create=True, replicas=replicas)
    assert kv is not None
    now = datetime.now(UTC)
    for old in await load_plans(js, plan.function):
        if old.end <= now:
            await kv.purge(old.key)
    await kv.put(plan.key, plan.model_dump_json().encode())


async def delete_plan(js: JetStreamContext, function: str, plan_id: str) -> bool:
    """Remove one plan; False when there was none."""
    kv = await _bucket(js, create=False)
    if kv is None:
        return False
    try:
        await kv.get(f"{function}.{plan_id}")
    except (KeyNotFoundError, KeyDeletedError):
        return False
    await kv.purge(f"{function}.{plan_id}")
    return True
