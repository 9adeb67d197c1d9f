"""Following and stopping jobs: `JobLifecycle.status`, `cancel` and `cancel_all`.

Status reads the job's record (its ticket or final result), then, for a ticketed job
with no result, whether its message is still in the work queue and whether a worker
holds it (asked on `surge.control.<function>`). Cancel replaces the ticket with a
`cancelled` result (only that ticket: a result that came first stands), removes the
message from the queue, tells the worker holding it (its output is dropped), answers
the job's reply subject and publishes the event. No job is both cancelled and answered
ok: the worker's own result has the same de-duplication id, so it is not stored, and
the worker sends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError

from function.contract.bounds import safe_reply_to
from function.contract.errors import ErrorCode
from function.contract.lifecycle import (
    ControlAsk,
    ControlReply,
    JobEvent,
    JobState,
    JobTicket,
    JobView,
    state_of_result,
)
from function.contract.parse import job_id_for
from function.contract.settings import (
    JOBS_STREAM,
    Priority,
    consumer_name,
    control_subject,
    events_subject,
    job_subject,
    tenant_stream,
)
from function.contract.wire import ErrorInfo, JobStatus, Result
from function.transport.records import (
    PAST_THE_END,
    WRONG_LAST_SEQUENCE,
    delete_message,
    expect_last,
    read_record,
)
from function.transport.storage import encode_result
from function.transport.webhooks import read_webhook

__all__ = ["CampaignCancelled", "JobLifecycle"]

ASK_TIMEOUT_S = 0.3  # how long a worker holding a job has to say so
CHUNK = 64  # jobs of a campaign cancelled at once


class CampaignCancelled(NamedTuple):
    """What `cancel_all` did: jobs that never ran (work saved: still queued, or held by a
    worker but not yet in a batch), jobs stopped while running (their output dropped),
    jobs already final (left as they were)."""

    never_ran: int
    stopped: int
    already_final: int


def _view_of(result: Result, detail: str = "") -> JobView:
    return JobView(
        job_id=result.job_id,
        state=state_of_result(result),
        function=result.function,
        tenant=result.tenant,
        result=result,
        detail=detail,
    )


def _cancelled_result(job_id: str, function: str, tenant: str | None, why: str) -> Result:
    return Result(
        job_id=job_id,
        status=JobStatus.ERROR,
        function=function,
        tenant=tenant,
        error=ErrorInfo(code=ErrorCode.CANCELLED, message=why),
    )


class JobLifecycle:
    """Status and cancel for one client's jobs (a tenant's, with `tenant`)."""

    def __init__(
        self, nc: NATS, tenant: str | None = None, *, webhooks: bool | None = None
    ) -> None:
        """`webhooks`: show each job's webhook record in its status (None: only without a
        tenant, whose NATS user may not read the `surge-webhooks` bucket)."""
        self._nc = nc
        self._js = nc.jetstream()
        self.tenant = tenant
        self._webhooks = webhooks if webhooks is not None else tenant is None

    def _unknown(self, job_id: str, detail: str) -> JobView:
        return JobView(job_id=job_id, state=JobState.UNKNOWN, tenant=self.tenant, detail=detail)

    # -- status -------------------------------------------------------------------------

    async def status(self, job_id: str) -> JobView:
        """Where the job is now: queued, running, or its final state (with the result)."""
        record = await read_record(self._js, job_id, self.tenant)
        if record is None:
            return self._unknown(
                job_id,
                "no record: not submitted with a ticket (e.g. `nats pub`), "
                "or its result has expired",
            )
        if record.result is not None:
            view = _view_of(record.result)
        else:
            assert record.ticket is not None
            view = await self._ticketed(record.ticket)
        if self._webhooks:
            view.webhook = await read_webhook(self._js, job_id, self.tenant)
        return view

    async def _ticketed(self, ticket: JobTicket) -> JobView:
        view = JobView(
            job_id=ticket.job_id,
            state=JobState.QUEUED,
            function=ticket.function,
            priority=ticket.priority,
            tenant=ticket.tenant,
            submitted_at=ticket.submitted_at,
        )
        held = await self._ask(ticket, "status")
        if held is not None:
            view.worker = held.worker
            if held.running:
                view.state, view.running_since = JobState.RUNNING, held.since
            else:
                view.detail = f"prepared by worker {held.worker}, waiting for a batch"
            return view
        if not await self._in_queue(ticket):
            again = await read_record(self._js, ticket.job_id, ticket.tenant)
            if again is not None and again.result is not None:  # it finished meanwhile
                return _view_of(again.result)
            view.state = JobState.UNKNOWN
            view.detail = "its message has left the queue and no result was stored"
            return view
        view.backlog = await self._backlog(ticket)
        return view

    async def _in_queue(self, ticket: JobTicket) -> bool:
        try:
            await self._js.get_msg(ticket.stream, ticket.sequence)
        except NotFoundError:
            return False
        return True

    async def _backlog(self, ticket: JobTicket) -> int | None:
        """Jobs of the ticket's function and priority not yet delivered to a worker."""
        name = consumer_name(ticket.function, ticket.priority)
        try:
            info = await self._js.consumer_info(ticket.stream, name)
        except Exception:  # no such consumer yet (no worker ever ran), or not allowed
            return None
        return int(info.num_pending or 0)

    async def _ask(self, ticket: JobTicket, op: str) -> ControlReply | None:
        """The reply of the worker holding the job's message, if any answers in time."""
        ask = ControlAsk(
            op=op, job_id=ticket.job_id, stream=ticket.stream, sequence=ticket.sequence
        )
        subject = control_subject(ticket.function, ticket.tenant)
        try:
            msg = await self._nc.request(subject, ask.model_dump_json().encode(), ASK_TIMEOUT_S)
        except (NatsTimeoutError, NoRespondersError):
            return None
        try:
            return ControlReply.model_validate_json(msg.data)
        except ValidationError:
            return None

    # -- cancel -------------------------------------------------------------------------

    async def cancel(self, job_id: str, why: str = "at the client's request") -> JobView:
        """Cancel a queued or running job; a final one is left as it is (its view says
        so). The view returned is the job's state afterwards."""
        record = await read_record(self._js, job_id, self.tenant)
        if record is None:
            return self._unknown(job_id, "nothing to cancel: no ticket or result for this id")
        if record.result is not None or record.ticket is None:
            return await self._finished_first(job_id)
        ticket = record.ticket
        result = await self._replace(ticket, record.sequence, why)
        if result is None:
            return await self._finished_first(job_id)
        held = await self._ask(ticket, "cancel")
        view = _view_of(result)
        view.priority, view.submitted_at = ticket.priority, ticket.submitted_at
        if held is not None:
            view.worker = held.worker
            view.detail = f"worker {held.worker} held it: its output is dropped"
        else:
            view.detail = "removed from the queue before any worker ran it"
        return view

    async def _replace(self, ticket: JobTicket, last: int, why: str) -> Result | None:
        """Store the `cancelled` result in place of record `last` (0: none), remove the
        message from the queue, answer the job and publish the event; None when the
        record was final first (nothing changed)."""
        result = _cancelled_result(ticket.job_id, ticket.function, ticket.tenant, why)
        encoded = encode_result(result, {})
        headers = {**encoded.stored_headers, **expect_last(last)}
        try:
            ack = await self._js.publish(encoded.subject, encoded.body, headers=headers)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            return None
        if ack.duplicate:  # a worker's result, stored within the duplicate window
            return None
        await self._remove(ticket)  # taken and acked meanwhile: it stands
        if ticket.reply_to:
            await self._nc.publish(ticket.reply_to, encoded.body, headers=encoded.headers)
        await self._event(ticket.job_id, ticket.tenant, JobState.CANCELLED, why)
        return result

    async def _remove(self, ticket: JobTicket) -> None:
        """Delete the job's message from its queue; one already gone (acked) is fine."""
        await delete_message(self._js, ticket.stream, ticket.sequence)

    async def _finished_first(self, job_id: str) -> JobView:
        record = await read_record(self._js, job_id, self.tenant)
        if record is None or record.result is None:
            return JobView(job_id=job_id, state=JobState.UNKNOWN, detail="its record changed")
        state = state_of_result(record.result)
        return _view_of(record.result, f"already {state.value}: nothing to cancel")

    async def _event(self, job_id: str, tenant: str | None, state: JobState, detail: str) -> None:
        event = JobEvent(job_id=job_id, state=state, detail=detail)
        await self._nc.publish(events_subject(job_id, tenant), event.model_dump_json().encode())

    async def cancel_all(
        self,
        function: str,
        priorities: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL),
        why: str = "the campaign was called off",
        on_progress: Callable[[int], None] | None = None,
    ) -> CampaignCancelled:
        """Cancel every job of `function` in the queue now (a campaign called off): each
        is answered `cancelled`; those no worker had taken never run. Jobs are cancelled
        `CHUNK` at a time, concurrently."""
        stream = tenant_stream(self.tenant) if self.tenant else JOBS_STREAM
        counts = [0, 0, 0]  # never ran, taken by a worker, final already
        for priority in priorities:
            subject = job_subject(priority, function, self.tenant)
            chunk: list[JobTicket] = []
            sequence = 1
            while True:
                try:
                    msg = await self._js.get_msg(stream, sequence, subject=subject, next=True)
                except APIError as exc:  # none left: "no message found", or past the end
                    if not isinstance(exc, NotFoundError) and exc.err_code != PAST_THE_END:
                        raise
                    msg = None
                if msg is not None:
                    assert msg.seq is not None
                    sequence = msg.seq + 1
                    chunk.append(
                        JobTicket(
                            job_id=job_id_for(msg.headers, stream, msg.seq, self.tenant),
                            function=function,
                            priority=priority,
                            tenant=self.tenant,
                            stream=stream,
                            sequence=msg.seq,
                            reply_to=safe_reply_to(msg.headers, self.tenant),
                        )
                    )
                if chunk and (msg is None or len(chunk) >= CHUNK):
                    await self._cancel_chunk(chunk, why, counts)
                    chunk = []
                    if on_progress is not None:
                        on_progress(sum(counts))
                if msg is None:
                    break
        return CampaignCancelled(*counts)

    async def _cancel_chunk(self, chunk: list[JobTicket], why: str, counts: list[int]) -> None:
        """Cancel `chunk` concurrently, then count each job: never run (never delivered,
        or held by a worker but not yet in a batch), stopped (running when cancelled: its
        output is dropped) or final already. The workers remember what the jobs they
        cancelled had done, so those delivered are asked afterwards."""
        results = await asyncio.gather(*(self._cancel_message(t, why) for t in chunk))
        first = chunk[0]
        delivered = await self._delivered_up_to(first.stream, first.function, first.priority)
        asked = [t for t, r in zip(chunk, results, strict=True) if r and t.sequence <= delivered]
        replies = await asyncio.gather(*(self._ask(t, "status") for t in asked))
        ran = {t.job_id for t, reply in zip(asked, replies, strict=True) if reply and reply.running}
        for ticket, result in zip(chunk, results, strict=True):
            if result is None:
                counts[2] += 1
            else:
                counts[1 if ticket.job_id in ran else 0] += 1

    async def _delivered_up_to(self, stream: str, function: str, priority: Priority) -> int:
        """The last stream sequence the function's consumer has delivered (0 if none)."""
        try:
            info = await self._js.consumer_info(stream, consumer_name(function, priority))
        except Exception:
            return 0
        return int(info.delivered.stream_seq or 0) if info.delivered else 0

    async def _cancel_message(self, ticket: JobTicket, why: str) -> Result | None:
        """Cancel one message found in the queue: whatever ticket it has is replaced, a
        result already stored stands (None), and the worker holding it is told."""
        record = await read_record(self._js, ticket.job_id, ticket.tenant)
        if record is not None and record.result is not None:
            await self._remove(ticket)
            return None
        result = await self._replace(ticket, record.sequence if record else 0, why)
        if result is not None:
            notice = ControlAsk(
                op="cancel", job_id=ticket.job_id, stream=ticket.stream, sequence=ticket.sequence
            )
            subject = control_subject(ticket.function, ticket.tenant)
            await self._nc.publish(subject, notice.model_dump_json().encode())
        return result
