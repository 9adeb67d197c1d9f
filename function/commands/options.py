"""Options that several `surge` commands share, spelled once."""

from __future__ import annotations

import os
from typing import Annotated

import typer

__all__ = ["DEFAULT_NATS_URL", "Function", "NatsUrl", "tenant"]

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
