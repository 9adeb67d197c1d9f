"""Job-path invariants on a fake message and an in-memory result store, in milliseconds.

Ack only after the result is stored; exactly one ending per job; hand-back on drain; a
failing batch retried job by job. The integration tests check the same against a real
nats-server; these pin the order of events exactly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from opentelemetry.trace import INVALID_SPAN
from PIL import Image

from function.contract.errors import BadInput, ErrorCode, TransientError
from function.contract.settings import Header, Priority, WorkerSettings
from function.contract.wire import (
    DeadLetter,
    JobRequest,
    ModelInfo,
    Output,
    Result,
    ScoresOutput,
)
from function.engine.finish import Completion
from function.engine.inflight import InFlightJob
from function.engine.settle import Settler
from function.transport.acks import DuplicateWrite

MODEL = ModelInfo(name="fake", version="0" * 16)


@dataclass
class FakeMsg:
    """The parts of a nats-py JetStream message the job path uses; settles into `log`."""

    log: list[tuple[str, str]]
    job_id: str
    delivered: int = 1
    subject: str = "surge.jobs.normal.fake"
    data: bytes = b"payload"
    reply: str = "$JS.ACK.fake"
    headers: dict[str, str] = field(default_factory=dict)
    unconfirmed_acks: int = 0

    def __post_init__(self) -> None:
        self.headers = {Header.MSG_ID: self.job_id, **self.headers}
        self.metadata = SimpleNamespace(
            num_delivered=self.delivered,
            timestamp=datetime.now(UTC),
            stream="SURGE_JOBS",
            sequence=SimpleNamespace(stream=hash(self.job_id) % 10_000),
            num_pending=0,
        )

    async def ack(self) -> None:
        self.log.append(("ack", self.job_id))

    async def ack_sync(self, timeout: float = 1.0) -> None:
        if self.unconfirmed_acks > 0:  # a leader change: the ack goes unanswered
            self.unconfirmed_acks -= 1
            raise NatsTimeoutError
        self.log.append(("ack", self.job_id))

    async def term(self) -> None:
        self.log.append(("term", self.job_id))

    async def nak(self, delay: float | None = None) -> None:
        self.log.append(("nak", self.job_id))

    async def in_progress(self) -> None:
        self.log.append(("in_progress", self.job_id))


class MemoryStore:
    """An in-memory `ResultStore`: results by job id, dead letters, and the event log."""

    def __init__(self, log: list[tuple[str, str]], *, failing: set[str] | None = None) -> None:
        self.log = log
        self.results: dict[str, Result] = {}
        self.letters: list[DeadLetter] = []
        self.failing = failing or set()
        self.final_elsewhere: set[str] = set()  # a cancel (say) stored their result first

    async def publish(self, result: Result, reply_to: str | None, headers: Any) -> None:
        [failure] = await self.store_all([result])
        if failure is not None:
            raise failure
        await self.reply(reply_to, result)

    async def encode(self, result: Result, headers: Any) -> Result:
        return result  # stored as it is

    async def store_all(self, results: list[Result]) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for result in results:
            if result.job_id in self.failing:
                outcomes.append(TimeoutError("store timed out"))
                continue
            if result.job_id in self.final_elsewhere:
                outcomes.append(DuplicateWrite(1))
                continue
            self.results[result.job_id] = result
            self.log.append(("store", result.job_id))
            outcomes.append(None)
        return outcomes

    async def reply(self, reply_to: str | None, encoded: Result) -> None:
        self.log.append(("reply", encoded.job_id))

    async def ack_all(self, msgs: list[FakeMsg], timeout: float) -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for msg in msgs:
            try:
                await msg.ack_sync(timeout)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def resend(self, result: Result, reply_to: str | None) -> None:
        self.log.append(("resend", result.job_id))

    async def lookup(self, job_id: str) -> Result | None:
        return self.results.get(job_id)

    async def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
        self.log.append(("dead_letter", letter.job_id))


class FakeModel:
    """Scores each sample by its mean; a batch holding a negative sample fails."""

    info = MODEL
    fast = True

    def run_batch(self, samples: list[np.ndarray]) -> np.ndarray:
        if any(float(s.mean()) < 0 for s in samples):
            raise TransientError("out of GPU memory")
        return np.array([[float(s.mean())] for s in samples])

    def postprocess(
        self, row: np.ndarray, image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        if float(row[0]) == 7.0:  # a task whose outputs are not Outputs
            return {"scores": "not an output"}  # type: ignore[dict-item]
        return {"scores": ScoresOutput(scores={"mean": float(row[0])})}


@dataclass
class Engine:
    log: list[tuple[str, str]]
    store: MemoryStore
    settler: Settler
    completion: Completion
    settled: list[str]
    pool: ThreadPoolExecutor


@pytest.fixture
def engine() -> Any:
    log: list[tuple[str, str]] = []
    settled: list[str] = []
    store = MemoryStore(log)
    settings = WorkerSettings(function="fake", max_deliver=3, nak_delay_s=0.0)
    settler = Settler(store, settings, MODEL, lambda job: settled.append(job.job_id))  # type: ignore[arg-type]
    pool = ThreadPoolExecutor(1)
    completion = Completion(FakeModel(), settler, settings, pool)  # type: ignore[arg-type]
    yield Engine(log, store, settler, completion, settled, pool)
    pool.shutdown()


def job(engine: Engine, job_id: str, value: float = 1.0, delivered: int = 1) -> InFlightJob:
    msg = FakeMsg(engine.log, job_id, delivered=delivered)
    held = InFlightJob(msg=msg, priority=Priority.NORMAL, span=INVALID_SPAN, context=None)  # type: ignore[arg-type]
    held.image = Image.new("RGB", (2, 2))
    held.sample = np.full((1, 2, 2), value, dtype=np.float32)
    return held


async def test_ack_comes_after_the_result_is_stored(engine: Engine) -> None:
    jobs = [job(engine, "a"), job(engine, "b")]
    out = FakeModel().run_batch([j.ready_sample for j in jobs])
    await engine.completion.complete(jobs, out, 0, 1)
    for job_id in ("a", "b"):
        events = [event for event, jid in engine.log if jid == job_id]
        assert events == ["store", "reply", "ack"]
    assert sorted(engine.settled) == ["a", "b"]
    assert engine.store.results["a"].outputs["scores"] == ScoresOutput(scores={"mean": 1.0})


async def test_a_failed_store_never_acks_and_the_job_comes_back(engine: Engine) -> None:
    engine.store.failing.add("a")
    held = job(engine, "a")
    await engine.completion.complete([held], FakeModel().run_batch([held.ready_sample]), 0, 1)
    assert ("ack", "a") not in engine.log
    assert [e for e, _ in engine.log] == ["nak"]  # retried with a delay, not lost
    assert engine.settled == ["a"] and held.settled


async def test_one_failed_store_in_a_batch_leaves_the_others_answered(engine: Engine) -> None:
    engine.store.failing.add("b")
    jobs = [job(engine, "a"), job(engine, "b"), job(engine, "c")]
    out = FakeModel().run_batch([j.ready_sample for j in jobs])
    await engine.completion.complete(jobs, out, 0, 1)
    for job_id in ("a", "c"):
        assert [e for e, jid in engine.log if jid == job_id] == ["store", "reply", "ack"]
    assert [e for e, jid in engine.log if jid == "b"] == ["nak"]
    assert sorted(engine.settled) == ["a", "b", "c"] and engine.completion.completed == 2


async def test_outputs_that_do_not_validate_leave_the_rest_of_the_batch_answered(
    engine: Engine,
) -> None:
    jobs = [job(engine, "a"), job(engine, "odd", value=7.0), job(engine, "c")]
    out = FakeModel().run_batch([j.ready_sample for j in jobs])
    await engine.completion.complete(jobs, out, 0, 1)
    for job_id in ("a", "c"):
        assert [e for e, jid in engine.log if jid == job_id] == ["store", "reply", "ack"]
    assert [e for e, jid in engine.log if jid == "odd"] == ["nak"]  # retried, not stranded
    assert sorted(engine.settled) == ["a", "c", "odd"]


async def test_an_unconfirmed_ack_is_sent_again_not_left_to_a_redelivery(
    engine: Engine,
) -> None:
    held = job(engine, "a")
    held.msg.unconfirmed_acks = 2  # type: ignore[attr-defined]
    await engine.completion.complete([held], FakeModel().run_batch([held.ready_sample]), 0, 1)
    assert [e for e, _ in engine.log] == ["store", "reply", "ack"]
    assert engine.settled == ["a"] and engine.completion.completed == 1


async def test_bad_input_is_stored_then_terminated_once(engine: Engine) -> None:
    held = job(engine, "bad")
    await engine.completion.fail(held, BadInput(ErrorCode.BAD_IMAGE, "not an image"))
    assert engine.log == [("store", "bad"), ("reply", "bad"), ("term", "bad")]
    result = engine.store.results["bad"]
    assert result.error is not None and result.error.code is ErrorCode.BAD_IMAGE
    assert engine.settled == ["bad"]


async def test_a_failing_batch_is_retried_job_by_job(engine: Engine) -> None:
    batch = [job(engine, "ok-1"), job(engine, "poison", value=-1.0), job(engine, "ok-2")]
    with pytest.raises(TransientError):
        FakeModel().run_batch([j.ready_sample for j in batch])
    await engine.completion.split_after_failure(batch, TransientError("oom"), engine.pool)
    assert [e for e, jid in engine.log if jid == "ok-1"] == ["store", "reply", "ack"]
    assert [e for e, jid in engine.log if jid == "ok-2"] == ["store", "reply", "ack"]
    assert [e for e, jid in engine.log if jid == "poison"] == ["nak"]
    assert sorted(engine.settled) == ["ok-1", "ok-2", "poison"]


async def test_the_last_attempt_is_dead_lettered_and_answered(engine: Engine) -> None:
    held = job(engine, "tired", value=-1.0, delivered=3)
    await engine.completion.split_after_failure([held], TransientError("oom"), engine.pool)
    assert engine.log == [
        ("dead_letter", "tired"),
        ("store", "tired"),
        ("reply", "tired"),
        ("term", "tired"),
    ]
    result = engine.store.results["tired"]
    assert result.error is not None and result.error.code is ErrorCode.MAX_DELIVER_EXCEEDED
    assert engine.store.letters[0].payload_bytes == len(b"payload")


async def test_hand_back_on_drain_naks_at_once_without_a_result(engine: Engine) -> None:
    held = job(engine, "unstarted")
    await engine.settler.hand_back(held)
    assert engine.log == [("nak", "unstarted")]
    assert engine.store.results == {} and engine.settled == ["unstarted"]


async def test_a_redelivery_of_a_stored_job_is_answered_from_the_store(engine: Engine) -> None:
    first = job(engine, "twice")
    await engine.completion.complete([first], FakeModel().run_batch([first.ready_sample]), 0, 1)
    again = job(engine, "twice", delivered=2)
    stored = await engine.store.lookup("twice")
    assert stored is not None
    await engine.settler.replay(again, stored)
    assert [e for e, _ in engine.log] == ["store", "reply", "ack", "resend", "ack"]
    assert engine.settled == ["twice", "twice"]  # one ending per delivery, one result


async def test_a_job_whose_deadline_passed_while_it_ran_is_answered_deadline_exceeded(
    engine: Engine,
) -> None:
    late, on_time = job(engine, "late"), job(engine, "on-time")
    past = datetime.now(UTC) - timedelta(seconds=1)
    late.request = JobRequest(
        job_id="late", function="fake", priority=Priority.NORMAL, deadline=past
    )
    out = FakeModel().run_batch([late.ready_sample, on_time.ready_sample])
    await engine.completion.complete([late, on_time], out, 0, 1)
    result = engine.store.results["late"]
    assert result.error is not None and result.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert [e for e, jid in engine.log if jid == "late"] == ["store", "reply", "term"]
    assert engine.store.results["on-time"].error is None


async def test_a_cancelled_job_in_a_batch_sends_nothing_and_is_acked(engine: Engine) -> None:
    cancelled, kept = job(engine, "cancelled"), job(engine, "kept")
    cancelled.cancelled = True  # its canceller stored and sent the `cancelled` result
    out = FakeModel().run_batch([cancelled.ready_sample, kept.ready_sample])
    await engine.completion.complete([cancelled, kept], out, 0, 1)
    assert [e for e, jid in engine.log if jid == "cancelled"] == ["ack"]
    assert "cancelled" not in engine.store.results
    assert [e for e, jid in engine.log if jid == "kept"] == ["store", "reply", "ack"]
    assert sorted(engine.settled) == ["cancelled", "kept"]


async def test_a_result_already_final_elsewhere_is_not_sent_again(engine: Engine) -> None:
    engine.store.final_elsewhere.add("raced")
    raced = job(engine, "raced")
    await engine.completion.complete([raced], FakeModel().run_batch([raced.ready_sample]), 0, 1)
    assert [e for e, jid in engine.log if jid == "raced"] == ["ack"]  # no reply: never ok
    assert engine.settled == ["raced"]
