"""Per-tenant quotas: what a tenant may queue, send and submit per second.

Two are enforced by the NATS server on the tenant's own stream (`SURGE_TENANT_<id>`,
discard-new): `max_pending` (its `max_msgs`) and `max_payload` (its `max_msg_size`); a
publish past either is refused in the PubAck, which the client raises as
`QuotaExceeded`. `max_rate` (jobs per second) is kept in the stream's metadata and
enforced by the workers: a job past it is answered `quota_exceeded`, never run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from function.contract.errors import ErrorCode, SurgeError

__all__ = [
    "RATE_METADATA_KEY",
    "QuotaExceeded",
    "QuotaName",
    "TenantQuota",
    "quota_refused",
]

RATE_METADATA_KEY = "surge.max_rate"

QuotaName = Literal["max_pending", "max_payload", "max_rate"]

# nats-server's error codes in a refused PubAck: stream store limit (max_msgs or
# max_bytes with discard-new) and message size over the stream's max_msg_size.
_STORE_LIMIT = 10077
_MESSAGE_TOO_LARGE = 10054


class TenantQuota(BaseModel):
    """One tenant's limits; None means unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pending: int | None = Field(default=None, ge=1, description="Jobs queued at once.")
    max_payload: int | None = Field(default=None, ge=1, description="Bytes in one job message.")
    max_rate: float | None = Field(default=None, gt=0, description="Jobs per second.")

    def describe(self) -> str:
        """`max_pending=100 max_payload=unlimited ...` for logs and the CLI."""
        parts = []
        for name in ("max_pending", "max_payload", "max_rate"):
            value = getattr(self, name)
            parts.append(f"{name}={'unlimited' if value is None else value}")
        return " ".join(parts)


class QuotaExceeded(SurgeError):
    """A tenant's job was refused: one of its quotas is used up."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, tenant: str, quota: QuotaName, detail: str) -> None:
        super().__init__(f"quota_exceeded: tenant {tenant!r} {quota}: {detail}")
        self.tenant = tenant
        self.quota: QuotaName = quota


def quota_refused(err_code: int | None) -> QuotaName | None:
    """Which server-enforced quota a refused publish ran into, if any."""
    if err_code == _STORE_LIMIT:
        return "max_pending"
    if err_code == _MESSAGE_TOO_LARGE:
        return "max_payload"
    return None
