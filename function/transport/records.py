"""A job's record on its results subject: the ticket written at submit, replaced by the
final result (the subject keeps one message).

A ticket is written only where nothing is yet (`Nats-Expected-Last-Subject-Sequence:
0`), so it never hides a result that came first; a cancel replaces exactly the ticket it
read (the expected sequence is the ticket's), so it never hides a result either.
"""

from __future__ import annotations

from typing import NamedTuple

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from pydantic import ValidationError

from function.contract.lifecycle import TICKET, JobTicket
from function.contract.settings import RESULTS_STREAM, Header, result_subject
from function.contract.wire import Result

__all__ = [
    "NO_MESSAGE_FOUND",
    "PAST_THE_END",
    "WRONG_LAST_SEQUENCE",
    "Record",
    "delete_message",
    "expect_last",
    "read_record",
    "write_ticket",
]

WRONG_LAST_SEQUENCE = 10071  # JetStream: the subject's last sequence was not the expected one
NO_MESSAGE_FOUND = 10057  # JetStream: deleting a message that is no longer there
PAST_THE_END = 10043  # JetStream: a sequence past the stream's last
_EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"


class Record(NamedTuple):
    """The message on a job's results subject: its ticket or its result, and sequence."""

    ticket: JobTicket | None
    result: Result | None
    sequence: int


async def delete_message(js: JetStreamContext, stream: str, sequence: int) -> bool:
    """Delete a message from `stream`; False when it was gone already (acked, deleted)."""
    try:
        return bool(await js.delete_msg(stream, sequence))
    except APIError as exc:
        if isinstance(exc, NotFoundError) or exc.err_code in (NO_MESSAGE_FOUND, PAST_THE_END):
            return False
        raise


def expect_last(sequence: int) -> dict[str, str]:
    """Headers that make a write to a results subject conditional on its last message."""
    return {_EXPECTED_LAST_SUBJECT_SEQUENCE: str(sequence)}


async def read_record(js: JetStreamContext, job_id: str, tenant: str | None) -> Record | None:
    """The job's ticket or result, or None (no record: never ticketed, or expired).

    An unreadable record (not Surge's) counts as none.
    """
    try:
        raw = await js.get_last_msg(RESULTS_STREAM, result_subject(job_id, tenant), direct=True)
    except (NotFoundError, NoRespondersError):
        return None
    headers = raw.headers or {}
    try:
        if headers.get(Header.RECORD) == TICKET:
            return Record(JobTicket.model_validate_json(raw.data or b""), None, int(raw.seq or 0))
        return Record(None, Result.model_validate_json(raw.data or b""), int(raw.seq or 0))
    except ValidationError:
        return None


async def write_ticket(js: JetStreamContext, ticket: JobTicket) -> bool:
    """Record a submitted job; False when its subject already holds a record (a result
    that came first, or a ticket from an earlier submit of the same id)."""
    headers = {Header.RECORD: TICKET, Header.JOB_ID: ticket.job_id, **expect_last(0)}
    subject = result_subject(ticket.job_id, ticket.tenant)
    try:
        await js.publish(subject, ticket.model_dump_json().encode(), headers=headers)
    except APIError as exc:
        if exc.err_code == WRONG_LAST_SEQUENCE:
            return False
        raise
    return True
