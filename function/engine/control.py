"""Questions about one job, asked of every worker of a function: is it yours, is it
running, stop it. Only the worker holding the job answers; the rest stay silent.

    surge.control.<function>            open jobs
    surge.control.<function>.<tenant>   a tenant's jobs (answered only about that tenant's)

A cancelled job is marked: left out of its batch if it has not started, its output
dropped if it has. The canceller has stored and sent its `cancelled` result already.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from function.contract.bounds import reply_subject_problem
from function.contract.lifecycle import ControlAsk, ControlReply
from function.contract.settings import control_subject
from function.engine.inflight import InFlightJob

__all__ = ["JobControl"]

log = logging.getLogger("surge.control")

Finder = Callable[[str, int], InFlightJob | None]
RECENT_CANCELS = 10_000  # cancelled jobs remembered, for questions after they have left


class JobControl:
    """Answers status and cancel questions about the jobs one worker holds."""

    def __init__(self, nc: NATS, function: str, worker_id: str, find: Finder) -> None:
        self._nc = nc
        self._function = function
        self._worker_id = worker_id
        self._find = find
        self._subs: list[Subscription] = []
        self.cancelled = 0
        self._recent: OrderedDict[tuple[str, int], ControlReply] = OrderedDict()

    async def start(self) -> None:
        base = control_subject(self._function)
        for subject in (base, f"{base}.*"):
            self._subs.append(await self._nc.subscribe(subject, cb=self._on_ask))

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("control unsubscribe failed: %r", exc)
        self._subs.clear()

    def _tenant_of(self, subject: str) -> str | None:
        tokens = subject.split(".")
        return tokens[3] if len(tokens) == 4 else None

    async def _on_ask(self, msg: Msg) -> None:
        try:
            ask = ControlAsk.model_validate_json(msg.data)
        except ValidationError:
            return  # not a question this worker can answer
        position = (ask.stream, ask.sequence)
        job = self._find(*position)
        tenant = self._tenant_of(msg.subject)
        reply = self._recent.get(position)  # a job this worker cancelled lately, if any
        if job is not None and not job.settled and job.job_id == ask.job_id:
            if job.tenant != tenant:
                return
            if ask.op == "cancel" and not job.cancelled:
                job.cancelled = True
                self.cancelled += 1
                log.debug("cancelled while held", extra={"job_id": job.job_id})
            reply = self._reply(job)
            if job.cancelled:
                self._remember(position, reply)
        if reply is None or reply.job_id != ask.job_id:
            return
        if msg.reply and _may_reply(msg.reply, tenant):
            await self._nc.publish(msg.reply, reply.model_dump_json().encode())

    def _reply(self, job: InFlightJob) -> ControlReply:
        since = job.running_since
        return ControlReply(
            job_id=job.job_id,
            worker=self._worker_id,
            running=since is not None,  # a cancelled job not running now never will
            since=datetime.fromtimestamp(since / 1e9, UTC) if since is not None else None,
            cancelled=job.cancelled,
        )

    def _remember(self, position: tuple[str, int], reply: ControlReply) -> None:
        """Keep what a cancelled job had done, so a later question about it (a campaign's
        count of work saved) is answered after the job has left this worker."""
        self._recent[position] = reply
        self._recent.move_to_end(position)
        while len(self._recent) > RECENT_CANCELS:
            self._recent.popitem(last=False)


def _may_reply(subject: str, tenant: str | None) -> bool:
    """A tenant's question is answered under its inbox (or a trusted user's `_INBOX.`)."""
    if reply_subject_problem(subject, tenant) is None:
        return True
    return tenant is not None and subject.startswith("_INBOX.")
