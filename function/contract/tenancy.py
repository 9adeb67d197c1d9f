"""Tenants, enforced by the NATS server: what each kind of NATS user may publish and read.

A tenant is a NATS user (password, nkey or JWT) whose permissions hold its id. The server,
not a header, decides what it can reach:

    publish    surge.jobs.<priority>.<function>.<tenant>      its own queues only
               $JS.API.DIRECT.GET.SURGE_RESULTS.surge.results.<tenant>.>   its own results
               $O.surge-blobs-<tenant>.> and its bucket's API   uploads to its own bucket
    subscribe  _INBOX_<tenant>.>                               its replies and acks only

So a tenant cannot publish into another's queue (or the open one), claim another's id,
read another's results or replies. The worker (the confused deputy) adds what the server
cannot see: it replies to a tenant's job only under that tenant's inbox, stores the result
under the tenant's results subject, reads `image_ref` only under the tenant's blob prefix,
and its de-duplication ids carry the tenant. Workers and the scaler are trusted users.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, Field

from function.contract.settings import (
    JOBS_SUBJECT_PREFIX,
    RESULTS_STREAM,
    result_subject,
    tenant_blob_bucket,
    tenant_inbox_prefix,
)

__all__ = ["Permissions", "User", "authorization_config", "tenant_permissions", "trusted"]


class Permissions(BaseModel):
    """Subjects a NATS user may publish to and subscribe to (nats-server `permissions`)."""

    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)


class User(BaseModel):
    """One user of the server's `authorization` block."""

    user: str
    password: str
    permissions: Permissions | None = None  # None: everything (workers, the scaler)


def tenant_permissions(tenant: str) -> Permissions:
    """All that tenant `tenant`'s clients need: publish its jobs, read its results and replies."""
    bucket = tenant_blob_bucket(tenant)
    return Permissions(
        publish=[
            f"{JOBS_SUBJECT_PREFIX}.*.*.{tenant}",
            f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.{result_subject('>', tenant)}",
            # uploads (put) to its own bucket: bind, look up, write, purge a replaced object
            f"$O.{bucket}.>",
            f"$JS.API.STREAM.INFO.OBJ_{bucket}",
            f"$JS.API.DIRECT.GET.OBJ_{bucket}.>",
            f"$JS.API.STREAM.MSG.GET.OBJ_{bucket}",
            f"$JS.API.STREAM.PURGE.OBJ_{bucket}",
        ],
        subscribe=[f"{tenant_inbox_prefix(tenant)}.>"],
    )


def trusted(user: str, password: str) -> User:
    """A worker's or the scaler's user: no limits."""
    return User(user=user, password=password)


def authorization_config(users: Mapping[str, User]) -> str:
    """The nats-server `authorization` block for `users` (JSON values are valid there)."""
    entries = []
    for user in users.values():
        entry: dict[str, object] = {"user": user.user, "password": user.password}
        if user.permissions is not None:
            entry["permissions"] = {
                "publish": {"allow": user.permissions.publish},
                "subscribe": {"allow": user.permissions.subscribe},
            }
        entries.append(json.dumps(entry))
    return "authorization {\n  users = [\n    " + ",\n    ".join(entries) + "\n  ]\n}\n"
