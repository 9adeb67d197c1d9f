"""The event loop a worker process runs on: uvloop where it is installed, else asyncio's.

A worker's message path is event-loop bound (several NATS messages per job, each a
few loop callbacks); uvloop's loop and transports cut the CPU a job costs by about a
third. `SURGE_EVENT_LOOP=asyncio` keeps the standard loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["EventLoopName", "chosen_loop", "run_loop"]

EventLoopName = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def chosen_loop(name: EventLoopName) -> Literal["uvloop", "asyncio"]:
    """The loop `name` resolves to here ('auto': uvloop if it can be imported)."""
    if name == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return name


def run_loop(main: Coroutine[Any, Any, T], name: EventLoopName = "auto") -> T:
    """`asyncio.run(main)` on the loop `name` resolves to."""
    if chosen_loop(name) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
