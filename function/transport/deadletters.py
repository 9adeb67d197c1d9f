"""The dead-letter stream (`SURGE_DEAD`): list, find, retry and remove dead letters.

A dead letter keeps a job that ran out of attempts with its original subject, headers
and payload (`ResultStore.dead_letter`). Retrying publishes that payload again to the
original subject under a new job id, `<first id>-r<n>` (n = 2, 3, ...: the lowest with
no record and no message in JetStream's de-duplication window), with `Surge-Retry-Of:
<first id>`: the original's failed result stays on its results subject as history. A
retry of a retry counts on from the first job (`a-r2` fails again: `a-r3`). The letter
is then deleted from the stream, unless kept.

Reading walks the stream a letter at a time, up to the last sequence it had when the
walk began, so letters written meanwhile (a retried job that failed again) are not met
twice. A `tenant`'s view holds only its own letters.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import NamedTuple

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from function.contract.errors import BadInput, SurgeError
from function.contract.parse import is_valid_job_id, parse_subject
from function.contract.settings import DEAD_STREAM, DEAD_SUBJECT_PREFIX, Header, dead_subject
from function.contract.wire import DeadLetter
from function.transport.records import delete_message, read_record

__all__ = [
    "DeadEntry",
    "DeadLetters",
    "NotRetryable",
    "Resubmit",
    "first_job_id",
    "payload_of",
    "retried_as",
    "retry_headers",
    "retry_ids",
]

log = logging.getLogger("surge.dead")

MAX_JOB_ID_CHARS = 256  # `is_valid_job_id`'s bound
_RETRY_NUMBERS = 1000  # past `-r1000`, a fresh id
_GAPS = 3  # `retried_as` looks this many ids past one with no record

# Publish a job again: (payload, job subject, headers, new job id) -> stored (True) or
# de-duplicated (False). `SurgeClient.resubmit`, which also writes the job's ticket.
Resubmit = Callable[[bytes, str, dict[str, str], str], Awaitable[bool]]


class NotRetryable(SurgeError):
    """A job that cannot be retried from the dead-letter stream, and why."""

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"job {job_id}: {why}")
        self.job_id = job_id


class DeadEntry(NamedTuple):
    """A dead letter with its place on the stream and when it was written."""

    sequence: int
    letter: DeadLetter
    written_at: datetime | None


def first_job_id(letter: DeadLetter) -> str:
    """The id of the first job the letter's job retries (its own id if none): its
    `Surge-Retry-Of`, when its own id is that id's `-r<n>`."""
    first = letter.headers.get(Header.RETRY_OF, "")
    if (
        first
        and is_valid_job_id(first)
        and re.fullmatch(rf"{re.escape(first)}-r\d+", letter.job_id)
    ):
        return first
    return letter.job_id


def _numbered(first: str) -> Iterator[str]:
    """`<first>-r2`, `-r3`, ... while they fit a job id."""
    for number in range(2, _RETRY_NUMBERS + 1):
        candidate = f"{first}-r{number}"
        if len(candidate) > MAX_JOB_ID_CHARS:
            return
        yield candidate


def retry_ids(first: str) -> Iterator[str]:
    """Candidate ids for a retry of `first`: `<first>-r2`, `-r3`, ...; then fresh ids
    (once they would be too long for a job id, or after many)."""
    yield from _numbered(first)
    while True:
        yield uuid.uuid4().hex


def retry_headers(letter: DeadLetter, first: str) -> dict[str, str]:
    """The job's own headers for its retry: without JetStream's (`Nats-*`: a new
    `Nats-Msg-Id` is set by the publisher), with `Surge-Retry-Of`."""
    kept = {k: v for k, v in letter.headers.items() if not k.lower().startswith("nats-")}
    kept[Header.RETRY_OF] = first
    return kept


def payload_of(letter: DeadLetter) -> bytes:
    """The job's original payload; `NotRetryable` when the letter does not hold it."""
    if letter.payload_dropped or (letter.payload_bytes and not letter.payload_b64):
        raise NotRetryable(
            letter.job_id,
            f"its payload ({letter.payload_bytes} bytes) was dropped from the dead letter "
            "(over the server's max_payload): submit the input again",
        )
    try:
        return base64.b64decode(letter.payload_b64, validate=True)
    except (binascii.Error, ValueError):
        raise NotRetryable(letter.job_id, "its dead letter's payload is unreadable") from None


def _original_subject(letter: DeadLetter) -> str:
    """The subject the job was published to, checked against the letter's function and
    tenant (a retry goes back where the job came from, nowhere else)."""
    try:
        job = parse_subject(letter.original_subject)
    except BadInput:
        job = None
    if job is None or (job.function, job.tenant) != (letter.function, letter.tenant):
        raise NotRetryable(
            letter.job_id, "its dead letter names no job subject of its function and tenant"
        )
    return letter.original_subject


class DeadLetters:
    """The dead-letter stream as one client sees it (a tenant's: its letters only)."""

    def __init__(self, js: JetStreamContext, tenant: str | None = None) -> None:
        self._js = js
        self.tenant = tenant

    async def scan(self, function: str | None = None) -> AsyncIterator[DeadEntry]:
        """Every letter (of `function`, when given), oldest first."""
        subject = dead_subject(function) if function else f"{DEAD_SUBJECT_PREFIX}.>"
        try:
            state = (await self._js.stream_info(DEAD_STREAM)).state
        except NotFoundError:  # no worker has created the streams yet: no letters
            return
        sequence, last = max(state.first_seq, 1), state.last_seq
        while sequence <= last:
            try:
                raw = await self._js.get_msg(DEAD_STREAM, seq=sequence, subject=subject, next=True)
            except NotFoundError:  # none left on the subject
                return
            if raw.seq is None or raw.seq > last:
                return
            sequence = raw.seq + 1
            try:
                letter = DeadLetter.model_validate_json(raw.data or b"")
            except ValidationError:
                log.warning("skipping an unreadable dead letter at sequence %d", raw.seq)
                continue
            if self.tenant is None or letter.tenant == self.tenant:
                yield DeadEntry(raw.seq, letter, raw.time)

    async def oldest(self, function: str | None = None, *, limit: int = 100) -> list[DeadEntry]:
        """The oldest `limit` letters (of `function`), oldest first."""
        found: list[DeadEntry] = []
        if limit < 1:
            return found
        async for entry in self.scan(function):
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    async def find(self, job_ids: Iterable[str]) -> dict[str, list[DeadEntry]]:
        """Every letter of each of `job_ids` (one walk of the stream), oldest first;
        ids with none are left out."""
        wanted = set(job_ids)
        found: dict[str, list[DeadEntry]] = {}
        async for entry in self.scan():
            if entry.letter.job_id in wanted:
                found.setdefault(entry.letter.job_id, []).append(entry)
        return found

    @staticmethod
    def pick(job_id: str, entries: list[DeadEntry]) -> DeadEntry:
        """The newest of a job's letters; `NotRetryable` when they are several tenants'
        (jobs of different tenants may share an id: name the tenant)."""
        tenants = sorted({entry.letter.tenant or "-" for entry in entries})
        if len(tenants) > 1:
            raise NotRetryable(
                job_id,
                f"dead letters of several tenants ({', '.join(tenants)}): "
                "name one with `surge --tenant T`",
            )
        return entries[-1]

    async def retry(self, entry: DeadEntry, resubmit: Resubmit, *, keep: bool = False) -> str:
        """Publish the letter's job again under a new id (returned), then delete the
        letter unless `keep`. `NotRetryable` when its payload was not kept."""
        letter = entry.letter
        payload = payload_of(letter)
        subject = _original_subject(letter)
        first = first_job_id(letter)
        headers = retry_headers(letter, first)
        for job_id in retry_ids(first):
            if await read_record(self._js, job_id, letter.tenant) is not None:
                continue  # a ticket or result: that id is taken
            if await resubmit(payload, subject, headers, job_id):
                break
        log.info("retried %s as %s", letter.job_id, job_id)
        if not keep:
            await self.remove(entry)
        return job_id

    async def remove(self, entry: DeadEntry) -> bool:
        """Delete a letter from the stream; False when it was gone already."""
        return await delete_message(self._js, DEAD_STREAM, entry.sequence)


async def retried_as(js: JetStreamContext, job_id: str, tenant: str | None) -> str | None:
    """The latest retry of `job_id` that has a record (`<id>-r<n>`), if any. An id left
    out (taken by a job with no record) is passed over, up to a few in a row."""
    latest, missed = None, 0
    for candidate in _numbered(job_id):
        if await read_record(js, candidate, tenant) is None:
            missed += 1
            if missed > _GAPS:
                break
            continue
        latest, missed = candidate, 0
    return latest
