"""Answer jobs that no function will ever take.

The jobs streams take any `surge.jobs.<high|normal>.<token>[.<tenant>]`, so a job for a function
nobody deployed (a typo, a retired function) would wait until the stream's maximum
age and then vanish without an answer. Every function has durable consumers (created
by NACK in a cluster, by the scaler or the first worker locally) that persist while it
is scaled to zero, so a subject that no consumer's filter matches has no taker. Every
worker runs an `OrphanSweeper` over the open jobs stream and every tenant's (the
consumers of each stream decide): jobs on such a subject older than `grace_s` get an
`unknown_function` error result (stored, and sent to a safe reply subject), then are
deleted. The consumers are listed again right before each answer, so a function deployed
meanwhile keeps its jobs, and nothing is swept while the jobs stream is younger than
`QUIET_GRACES` graces (a server that lost its store gets its consumers back from each
function's workers, the scaler or NACK). Two workers may answer the same orphan at once:
the result store keeps one (its `Nats-Msg-Id` de-duplicates), the reply may arrive twice.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from function.contract.bounds import quote
from function.contract.errors import ErrorCode
from function.contract.parse import answer_address
from function.contract.settings import JOBS_STREAM, JOBS_SUBJECT_PREFIX, tenant_stream
from function.contract.wire import ErrorInfo, JobStatus, Result, as_utc
from function.telemetry import METRICS, trace_id_in
from function.transport.periodic import Periodic
from function.transport.storage import ResultStore

__all__ = ["OrphanSweeper", "subject_matches"]

log = logging.getLogger("surge.orphans")

_PER_SWEEP = 256
_PAGE = 256  # the server lists at most this many consumers per request
_MAX_PAGES = 64
QUIET_GRACES = 5


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS subject `subject` matches `pattern` (with `*` and `>` wildcards)."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def _matched(filters: list[str], subject: str) -> bool:
    """Whether one of the consumers' `filters` takes `subject`."""
    return any(subject_matches(f, subject) for f in filters)


def _function_of(subject: str) -> str:
    """The function token of `surge.jobs.<priority>.<function>[.<tenant>]`."""
    parts = subject.split(".")
    return parts[3] if len(parts) > 3 else parts[-1]


def _age_s(stamp: datetime) -> float:
    """Seconds since `stamp` (a server time; without a zone it is UTC)."""
    return (datetime.now(UTC) - as_utc(stamp)).total_seconds()


class OrphanSweeper(Periodic):
    """Periodically answers and removes jobs for functions that have no consumer."""

    def __init__(
        self, js: JetStreamContext, results: ResultStore, function: str, *, grace_s: float
    ) -> None:
        super().__init__(min(max(grace_s / 4, 1.0), 30.0))
        self._js = js
        self._results = results
        self._function = function
        self._grace_s = grace_s
        self.streams: list[str] = [JOBS_STREAM]

    def set_tenants(self, tenants: list[str]) -> None:
        """Sweep these tenants' streams too."""
        self.streams = [JOBS_STREAM] + [tenant_stream(t) for t in tenants]

    async def tick(self) -> None:
        await self.sweep()

    async def _filters(self, stream: str) -> list[str] | None:
        """Every consumer's filter subjects on `stream`, all pages; None if one takes all."""
        filters: list[str] = []
        for page in range(_MAX_PAGES):
            consumers = await self._js.consumers_info(stream, offset=page * _PAGE)
            for consumer in consumers:
                config = consumer.config
                found = [config.filter_subject] if config.filter_subject else []
                found += config.filter_subjects or []
                if not found:
                    return None
                filters += found
            if len(consumers) < _PAGE:
                return filters
        return None  # more consumers than we will list: sweep nothing

    async def _served(self, stream: str, subject: str) -> bool:
        filters = await self._filters(stream)
        return filters is None or _matched(filters, subject)

    async def orphan_subjects(self, stream: str = JOBS_STREAM) -> list[str]:
        """Job subjects holding messages that no consumer of `stream` matches."""
        info = await self._js.stream_info(stream, subjects_filter=f"{JOBS_SUBJECT_PREFIX}.>")
        subjects = list((info.state.subjects or {}).keys())
        if not subjects or self._young(info.created):
            return []
        filters = await self._filters(stream)
        if filters is None:
            return []
        return [s for s in subjects if not _matched(filters, s)]

    def _young(self, created: datetime | None) -> bool:
        """The stream was (re)created a moment ago: consumers may still be on their way."""
        return created is not None and _age_s(created) < QUIET_GRACES * self._grace_s

    async def sweep(self) -> int:
        """Answer orphaned jobs older than the grace; return how many were answered."""
        answered = 0
        for stream in self.streams:
            try:
                subjects = await self.orphan_subjects(stream)
            except NotFoundError:  # a tenant removed meanwhile
                continue
            for subject in subjects:
                answered += await self._sweep_subject(stream, subject, _PER_SWEEP - answered)
        return answered

    async def _sweep_subject(self, stream: str, subject: str, most: int) -> int:
        answered, sequence = 0, 1
        while answered < most:
            try:
                raw = await self._js.get_msg(stream, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                break
            if not self._old_enough(raw) or await self._served(stream, subject):
                break
            await self._answer(stream, subject, raw)
            answered += 1
            sequence = (raw.seq or sequence) + 1
        return answered

    def _old_enough(self, raw: RawStreamMsg) -> bool:
        return raw.time is None or _age_s(raw.time) >= self._grace_s

    async def _answer(self, stream: str, subject: str, raw: RawStreamMsg) -> None:
        sequence = raw.seq or 0
        headers = dict(raw.headers or {})
        job_id, reply_to, tenant = answer_address(
            subject, headers, raw.data or b"", stream=stream, sequence=sequence
        )
        function = _function_of(subject)
        message = (
            f"no worker serves function {quote(function)}: nothing consumes {quote(subject)}; "
            "publish to a deployed function's subject"
        )
        result = Result(
            job_id=job_id,
            status=JobStatus.ERROR,
            function=function,
            tenant=tenant,
            error=ErrorInfo(code=ErrorCode.UNKNOWN_FUNCTION, message=message),
            trace_id=trace_id_in(headers),
        )
        await self._results.publish(result, reply_to, {})
        with contextlib.suppress(NotFoundError):  # another worker removed it first
            await self._js.delete_msg(stream, sequence)
        METRICS.jobs.labels(self._function, "error", ErrorCode.UNKNOWN_FUNCTION.value).inc()
        log.info("answered a job for unserved function %s", quote(function))
