"""Per-job accounting for one load run: every job is scheduled, then ends exactly one way.

Job ids are `<run id>-<index>`, so acks, results and dead letters map back to a row.
Times are seconds from the run's start on the monotonic clock.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
from nats.aio.msg import Msg

from function.contract.settings import Header
from function.contract.wire import Result
from loadgen.run.records import Accounting, LatencySummary

__all__ = ["Ledger", "summarize"]

NAN = math.nan
MISSING_IDS_SHOWN = 20


def summarize(values_ms: list[float] | np.ndarray) -> LatencySummary:
    """Percentiles of `values_ms` (milliseconds)."""
    data = np.asarray(values_ms, dtype=float)
    if data.size == 0:
        return LatencySummary()
    p50, p90, p99, p999 = np.percentile(data, [50, 90, 99, 99.9])
    return LatencySummary(
        count=int(data.size),
        mean=float(data.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        p999=float(p999),
        max=float(data.max()),
    )


class Ledger:
    """Rows of (scheduled, sent, acked, answered, outcome) for one run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._prefix = f"{run_id}-"
        self.scheduled: list[float] = []
        self.sent: list[float] = []
        self.acked: list[float] = []
        self.answered: list[float] = []
        self.outcome: list[str | None] = []
        self.queued_ms: list[float] = []
        self.compute_ms: list[float] = []  # each result's timings.compute_ms (its GPU time)
        self.rejected: dict[int, str] = {}
        self.dead: set[int] = set()
        self.recovered: set[int] = set()
        self.duplicate_acks = 0
        self.duplicate_results = 0
        self.answered_count = 0
        self.acked_count = 0

    def __len__(self) -> int:
        return len(self.scheduled)

    def job_id(self, index: int) -> str:
        return f"{self._prefix}{index}"

    def index(self, job_id: str) -> int | None:
        """The row of a job id of this run, or None."""
        if not job_id.startswith(self._prefix):
            return None
        tail = job_id[len(self._prefix) :]
        if not tail.isdigit() or int(tail) >= len(self.scheduled):
            return None
        return int(tail)

    def add(self, scheduled: float) -> int:
        """A new row for a job scheduled at `scheduled`; returns its index."""
        self.scheduled.append(scheduled)
        self.sent.append(NAN)
        self.acked.append(NAN)
        self.answered.append(NAN)
        self.outcome.append(None)
        self.queued_ms.append(NAN)
        self.compute_ms.append(NAN)
        return len(self.scheduled) - 1

    def on_ack(self, index: int, now: float, msg: Msg) -> None:
        """A PubAck (or a refusal) for row `index`."""
        status = (msg.headers or {}).get("Status")
        if status == "503":
            self.rejected.setdefault(index, "no_stream")
            return
        try:
            body = json.loads(msg.data or b"{}")
        except ValueError:
            body = {}
        if "error" in body:
            code = body["error"].get("err_code") or body["error"].get("code") or "error"
            self.rejected.setdefault(index, f"jetstream_{code}")
            return
        if body.get("duplicate"):
            self.duplicate_acks += 1
        if math.isnan(self.acked[index]):
            self.acked[index] = now
            self.acked_count += 1

    def on_result(self, index: int, now: float, msg: Msg) -> None:
        """A result pushed to the run's inbox; the first one per job counts."""
        if not math.isnan(self.answered[index]):
            self.duplicate_results += 1
            return
        headers = msg.headers or {}
        status, code, queued = headers.get(Header.STATUS), headers.get(Header.ERROR_CODE), NAN
        try:
            result = Result.model_validate_json(msg.data)
        except ValueError:
            pass  # headers alone still tell the outcome
        else:
            status = result.status.value
            code = result.error.code.value if result.error else None
            queued = result.timings.queued_ms
            self._compute(index, result)
        self._answer(index, now, "ok" if status == "ok" else (code or "error"), queued)

    def _compute(self, index: int, result: Result) -> None:
        self.compute_ms[index] = result.timings.compute_ms

    def on_stored(self, index: int, now: float, result: Result) -> None:
        """A result found in the store after the run (never pushed, or pushed too late)."""
        if not math.isnan(self.answered[index]):
            return
        self.recovered.add(index)
        self._compute(index, result)
        code = result.error.code.value if result.error else "error"
        self._answer(index, now, "ok" if result.status.value == "ok" else code, NAN)

    def _answer(self, index: int, now: float, outcome: str, queued_ms: float) -> None:
        self.answered[index] = now
        self.outcome[index] = outcome
        self.queued_ms[index] = queued_ms
        self.answered_count += 1

    def unanswered(self) -> list[int]:
        """Published rows with no result yet and no refusal."""
        return [
            i
            for i, answered in enumerate(self.answered)
            if math.isnan(answered) and not math.isnan(self.sent[i]) and i not in self.rejected
        ]

    def latencies_ms(self) -> np.ndarray:
        """Result time minus scheduled time, per answered job, in milliseconds."""
        answered = np.asarray(self.answered, dtype=float)
        scheduled = np.asarray(self.scheduled, dtype=float)
        mask = ~np.isnan(answered)
        result: np.ndarray = (answered[mask] - scheduled[mask]) * 1000.0
        return result

    def lag_ms(self) -> np.ndarray:
        """Actual send time minus scheduled time, in milliseconds."""
        sent = np.asarray(self.sent, dtype=float)
        scheduled = np.asarray(self.scheduled, dtype=float)
        mask = ~np.isnan(sent)
        result: np.ndarray = (sent[mask] - scheduled[mask]) * 1000.0
        return result

    def accounting(self) -> Accounting:
        """Totals; a published job without a result or a dead letter is missing."""
        published = sum(not math.isnan(s) for s in self.sent)
        outcomes = Counter(o for o in self.outcome if o is not None)
        missing = [i for i in self.unanswered() if i not in self.dead]
        errors = {k: v for k, v in sorted(outcomes.items()) if k != "ok"}
        return Accounting(
            scheduled=len(self.scheduled),
            published=published,
            acknowledged=self.acked_count,
            rejected=dict(Counter(self.rejected.values())),
            duplicates_acked=self.duplicate_acks,
            answered_ok=outcomes.get("ok", 0),
            answered_error=errors,
            dead_lettered=len(self.dead),
            recovered_from_store=len(self.recovered),
            duplicate_results=self.duplicate_results,
            missing=len(missing),
            missing_ids=[self.job_id(i) for i in missing[:MISSING_IDS_SHOWN]],
        )
