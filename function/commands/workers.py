"""Which workers of a function are alive, from the heartbeats they publish on
`surge.heartbeat.<function>` (core NATS, every `heartbeat_interval_s`).

`surge submit --wait` listens while it waits, so that a wait that ends without a
result can say why and what to do:

    sightings = await WorkerSightings.listen(nc, "remove-bg")
    ...                                     # wait for results
    print(sightings.advice(waited_s=5))     # "no remove-bg worker is running ..."
"""

from __future__ import annotations

import asyncio
from collections import Counter

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.settings import heartbeat_subject

__all__ = ["WorkerSightings"]


class WorkerSightings:
    """The latest heartbeat of each worker of one function heard since `listen`."""

    def __init__(self, function: str) -> None:
        self.function = function
        self.latest: dict[str, Heartbeat] = {}
        self.heard = asyncio.Event()  # set at each heartbeat of the function
        self._sub: Subscription | None = None

    @classmethod
    async def listen(cls, nc: NATS, function: str) -> WorkerSightings:
        """Start hearing `function`'s heartbeats on `nc`."""
        sightings = cls(function)
        sightings._sub = await nc.subscribe(heartbeat_subject(function), cb=sightings._on_beat)
        return sightings

    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValidationError:
            return  # not a heartbeat: not a worker either
        if beat.function == self.function:
            self.latest[beat.worker_id[:128]] = beat
            self.heard.set()

    def alive(self) -> list[Heartbeat]:
        """Workers whose last heartbeat did not say they stopped."""
        return [beat for beat in self.latest.values() if beat.state is not WorkerState.STOPPED]

    def advice(self, waited_s: float) -> str:
        """One line: whether any worker of the function is alive, and what to do."""
        later = "`surge result JOB_ID` fetches a result later (jobs stay queued)"
        alive = self.alive()
        if not alive:
            heard = "every one stopped" if self.latest else f"no heartbeat in {waited_s:.0f} s"
            return (
                f"no {self.function} worker is running ({heard}): start one with "
                f"`surge worker -f {self.function}` (or `surge up`); {later}"
            )
        states = Counter(beat.state.value for beat in alive)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        warming = " (a warming worker is still loading its model)" if "warming" in states else ""
        return (
            f"{len(alive)} {self.function} worker(s) alive ({counts}){warming}: the jobs are "
            f"queued or running; wait longer with --timeout, or {later}"
        )

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
