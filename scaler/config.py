"""The scaler's own settings and the trigger metadata KEDA sends with every call.

`ScalerSettings` come from `SURGE_SCALER_*` env vars; the NATS URL, log level and the
consumer settings (ack wait, max deliver, ...) come from the worker's `SURGE_*` vars,
so the scaler creates consumers exactly as the workers would.

`ScalerMetadata` parses a ScaledObject trigger's `metadata` (all strings on the wire)::

    triggers:
      - type: external-push
        metadata:
          scalerAddress: surge-scaler.surge.svc:9090
          function: remove-bg            # required
          targetDrainSeconds: "10"       # drain the backlog within this time
          replicaThroughput: "7"         # jobs/s per replica until measured
          coldStartSeconds: "30"         # lead time until measured
          prewarmMarginSeconds: "5"      # extra lead for pre-warm windows
          poisonHoldSeconds: "120"       # how long retrying jobs alone keep it active
          activationRate: "0.1"          # arrivals (jobs/s) that keep it active
          maxReplicas: "4"               # cap on the demand (optional)

Other keys (scalerAddress, enableTLS, ...) are ignored.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from function.contract.errors import SurgeError
from scaler.policy import Policy

__all__ = ["MetadataError", "ScalerMetadata", "ScalerSettings", "metric_name"]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class ScalerSettings(BaseSettings):
    """Where the scaler listens and how often it looks (`SURGE_SCALER_<NAME>`)."""

    model_config = SettingsConfigDict(env_prefix="SURGE_SCALER_", extra="ignore")

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=9090, ge=0)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(default=8080, ge=0, description="0 turns the endpoint off.")
    poll_interval_s: float = Field(default=0.1, gt=0)
    stale_after_s: float = Field(default=5.0, gt=0)
    plan_refresh_s: float = Field(default=2.0, gt=0)
    grace_s: float = Field(default=5.0, ge=0, description="Shutdown grace for open streams.")


class MetadataError(SurgeError):
    """The trigger metadata is missing a key or has a bad value."""


class ScalerMetadata(BaseModel):
    """One external-push trigger's metadata, validated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    function: str
    target_drain_s: float = Field(default=10.0, gt=0, alias="targetDrainSeconds")
    throughput: float = Field(default=1.0, gt=0, alias="replicaThroughput")
    cold_start_s: float = Field(default=30.0, ge=0, alias="coldStartSeconds")
    prewarm_margin_s: float = Field(default=5.0, ge=0, alias="prewarmMarginSeconds")
    poison_hold_s: float = Field(default=120.0, ge=0, alias="poisonHoldSeconds")
    active_rate: float = Field(default=0.1, ge=0, alias="activationRate")
    max_replicas: int | None = Field(default=None, ge=1, alias="maxReplicas")

    @field_validator("function")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be one NATS subject token of letters, digits, '-' or '_'")
        return value

    @classmethod
    def parse(cls, metadata: dict[str, str]) -> ScalerMetadata:
        """Validate `metadata`; raise `MetadataError` naming every bad key."""
        try:
            return cls.model_validate({k: v for k, v in metadata.items() if v != ""})
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"]) or "metadata"
                problems.append(f"{key}: {error['msg']}")
            raise MetadataError("bad scalerMetadata: " + "; ".join(problems)) from None

    def policy(self) -> Policy:
        return Policy(
            target_drain_s=self.target_drain_s,
            default_throughput=self.throughput,
            default_cold_start_s=self.cold_start_s,
            prewarm_margin_s=self.prewarm_margin_s,
            poison_hold_s=self.poison_hold_s,
            active_rate=self.active_rate,
            max_replicas=self.max_replicas,
        )


def metric_name(function: str) -> str:
    """The metric Surge reports to KEDA for a function (KEDA prefixes `sN-` itself)."""
    return f"surge-{function}-replicas"
