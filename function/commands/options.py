"""Options that several `surge` commands share, spelled once."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from function.contract.parse import is_valid_job_id

__all__ = ["DEFAULT_NATS_URL", "Function", "NatsUrl", "check_job_id", "tenant"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

NatsUrl = Annotated[
    str, typer.Option("--nats-url", envvar="SURGE_NATS_URL", help="NATS server URL.")
]
Function = Annotated[
    str, typer.Option("--function", "-f", envvar="SURGE_FUNCTION", help="Function to run.")
]


def tenant() -> str | None:
    """The tenant `surge --tenant` (or SURGE_TENANT) names, if any."""
    return os.environ.get("SURGE_TENANT") or None


def check_job_id(job_id: str, hint: str = "JOB_ID") -> str:
    """`job_id` when it is one NATS subject token; a usage error (exit 2) if not."""
    if not is_valid_job_id(job_id):
        raise typer.BadParameter(
            "printable ASCII, no spaces, '.', '*' or '>' (at most 256)", param_hint=hint
        )
    return job_id
