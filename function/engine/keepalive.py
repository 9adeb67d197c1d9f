"""`keep_alive`: the jobs a worker holds are kept from redelivery while it works on them
(a job waiting for its screen, a long batch), up to a limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Set

from function.engine.inflight import InFlightJob, wall_ns

__all__ = ["KEEP_ALIVE_ACK_WAITS", "keep_alive"]

KEEP_ALIVE_ACK_WAITS = 10  # a job is kept alive up to this many ack waits after fetching


async def keep_alive(held: Set[InFlightJob], ack_wait_s: float, stopping: asyncio.Event) -> None:
    """Every `ack_wait_s / 3`, tell JetStream the jobs in `held` are in progress, until
    `stopping`. Only up to `KEEP_ALIVE_ACK_WAITS x ack_wait_s` after fetching: a job stuck
    longer is left to expire, so JetStream redelivers it or, past `max_deliver`, it is
    dead-lettered."""
    period = ack_wait_s / 3
    limit_ns = int(KEEP_ALIVE_ACK_WAITS * ack_wait_s * 1e9)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), period)
        now = wall_ns()
        for job in list(held):
            age = now - job.fetched_ns
            if not job.settled and period * 1e9 < age < limit_ns:
                with contextlib.suppress(Exception):
                    await job.msg.in_progress()
