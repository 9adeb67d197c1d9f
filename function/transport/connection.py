"""What the worker knows about its NATS connection, from nats-py's callbacks.

nats-py reconnects after a dropped connection, but closes it for good on some server
errors (e.g. `maximum control line exceeded`). `ConnectionHealth` turns the callbacks
into a problem with a start time (readiness fails at once, liveness after a grace)
and calls `on_fatal` once when the connection is closed without the worker asking.
Before the first connection, `open_nats`'s attempts are one warning line each and the
problem readiness shows ("cannot reach NATS at ...").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS

__all__ = ["ConnectionHealth", "Trouble"]

log = logging.getLogger("surge.connection")

Trouble = tuple[str, float]
"""A problem and the `time.monotonic()` at which it began."""


class ConnectionHealth:
    """Callbacks for `nats.connect` and the connection's current problem."""

    def __init__(self, on_fatal: Callable[[str], None] | None = None) -> None:
        self.on_fatal = on_fatal
        self.trouble: Trouble | None = None
        self.fatal: str | None = None
        self.closing = False
        self.last_error: str | None = None
        self.nc: NATS | None = None  # set once connected, for the error that closed it

    def callbacks(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        return {
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "closed_cb": self._closed,
            "error_cb": self._error,
            "progress_cb": self._connecting,
        }

    def _connecting(self, problem: str | None) -> None:
        """`open_nats` failed an attempt (`problem`), or connected (None)."""
        if problem is None:
            self.trouble = None
            return
        since = self.trouble[1] if self.trouble is not None else time.monotonic()
        self.trouble = (problem, since)
        log.warning("%s", problem)

    async def _disconnected(self) -> None:
        if self.trouble is None and not self.closing:
            self.trouble = ("NATS disconnected; reconnecting", time.monotonic())
            log.warning("NATS disconnected; reconnecting")

    async def _reconnected(self) -> None:
        if self.fatal is None:
            self.trouble = None
            log.info("NATS reconnected")

    async def _error(self, error: Exception) -> None:
        self.last_error = repr(error)[:256]
        log.warning("NATS error: %s", self.last_error)

    async def _closed(self) -> None:
        if self.closing:
            return
        if self.nc is not None and self.nc.last_error is not None:
            self.last_error = str(self.nc.last_error)[:256]
        self.fatal = f"NATS connection closed for good ({self.last_error or 'no error given'})"
        self.trouble = (self.fatal, time.monotonic())
        log.error("%s: the worker cannot recover", self.fatal)
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)
