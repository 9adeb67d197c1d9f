"""Answer jobs that no function will ever take.

The jobs stream takes any `surge.jobs.<high|normal>.<token>`, so a job for a function
nobody deployed (a typo, a retired function) would wait until the stream's maximum
age and then vanish without an answer. Every function has durable consumers (created
by NACK in a cluster, by the scaler or the first worker locally) that persist while it
is scaled to zero, so a subject that no consumer's filter matches has no taker. Every
worker runs an `OrphanSweeper`: jobs on such a subject older than `grace_s` get an
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
from function.contract.settings import JOBS_STREAM, JOBS_SUBJECT_PREFIX
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
    """Whether a consumer takes `subject`; a tenant's job counts as taken by a function's
    consumer from before tenants (it is widened when that function's worker starts)."""
    open_subject = ".".join(subject.split(".")[:4])
    return any(subject_matches(f, subject) or subject_matches(f, open_subject) for f in filters)


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

    async def tick(self) -> None:
        await self.sweep()

    async def _filters(self) -> list[str] | None:
        """Every job consumer's filter subjects, all pages; None if any consumer takes all."""
        filters: list[str] = []
        for page in range(_MAX_PAGES):
            consumers = await self._js.consumers_info(JOBS_STREAM, offset=page * _PAGE)
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

    async def _served(self, subject: str) -> bool:
        filters = await self._filters()
        return filters is None or _matched(filters, subject)

    async def orphan_subjects(self) -> list[str]:
        """Job subjects holding messages that no consumer of the jobs stream matches."""
        info = await self._js.stream_info(JOBS_STREAM, subjects_filter=f"{JOBS_SUBJECT_PREFIX}.>")
        subjects = list((info.state.subjects or {}).keys())
        if not subjects or self._young(info.created):
            return []
        filters = await self._filters()
        if filters is None:
            return []
        return [s for s in subjects if not _matched(filters, s)]

    def _young(self, created: datetime | None) -> bool:
        """The stream was (re)created a moment ago: consumers may still be on their way."""
        return created is not None and _age_s(created) < QUIET_GRACES * self._grace_s

    async def sweep(self) -> int:
        """Answer orphaned jobs older than the grace; return how many were answered."""
        answered = 0
        for subject in await self.orphan_subjects():
            sequence = 1
            while answered < _PER_SWEEP:
                try:
                    raw = await self._js.get_msg(
                        JOBS_STREAM, seq=sequence, subject=subject, next=True
                    )
                except NotFoundError:
                    break
                if not self._old_enough(raw) or await self._served(subject):
                    break
                await self._answer(subject, raw)
                answered += 1
                sequence = (raw.seq or sequence) + 1
        return answered

    def _old_enough(self, raw: RawStreamMsg) -> bool:
        return raw.time is None or _age_s(raw.time) >= self._grace_s

    async def _answer(self, subject: str, raw: RawStreamMsg) -> None:
        sequence = raw.seq or 0
        headers = dict(raw.headers or {})
        job_id, reply_to, tenant = answer_address(
            subject, headers, raw.data or b"", stream=JOBS_STREAM, sequence=sequence
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
            await self._js.delete_msg(JOBS_STREAM, sequence)
        METRICS.jobs.labels(self._function, "error", ErrorCode.UNKNOWN_FUNCTION.value).inc()
        log.info("answered a job for unserved function %s", quote(function))
