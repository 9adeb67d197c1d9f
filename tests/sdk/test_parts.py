"""The SDK's parts without a server: typed results, exceptions, the reply buffer, batches."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from function.contract.errors import ErrorCode
from function.contract.wire import ErrorInfo, ImageOutput, JobStatus, Result
from surge import JobCancelled, JobExpired, JobFailed, JobState, MissingOutput
from surge import _replies as replies_module
from surge._batch import each
from surge._inputs import as_deadline
from surge._replies import Replies
from surge.results import JobResult, typed_result
from tests.helpers import png_bytes


def failed(code: ErrorCode, job_id: str = "j1") -> Result:
    error = ErrorInfo(code=code, message="why")
    return Result(job_id=job_id, status=JobStatus.ERROR, function="tiny", error=error)


@pytest.mark.parametrize(
    ("code", "raised", "state", "message"),
    [
        (ErrorCode.BAD_IMAGE, JobFailed, JobState.FAILED, "job j1 failed: bad_image: why"),
        (ErrorCode.CANCELLED, JobCancelled, JobState.CANCELLED, "job j1 was cancelled: why"),
        (
            ErrorCode.DEADLINE_EXCEEDED,
            JobExpired,
            JobState.EXPIRED,
            "job j1 expired (deadline_exceeded): why",
        ),
    ],
)
def test_a_result_that_is_not_ok_raises_what_it_means(
    code: ErrorCode, raised: type[JobFailed], state: JobState, message: str
) -> None:
    result = JobResult(failed(code), {})
    assert not result.ok and result.state is state and result.code is code
    with pytest.raises(raised) as caught:
        result.image("mask")
    assert str(caught.value) == message and type(caught.value) is raised
    assert caught.value.code is code and caught.value.result.job_id == "j1"


async def test_typed_results_read_referenced_images_once() -> None:
    png = png_bytes(4, 3)
    outputs: dict[str, Any] = {
        "inline": ImageOutput(width=4, height=3, data=base64.b64encode(png).decode()),
        "stored": ImageOutput(width=4, height=3, ref="results/j1/stored"),
    }
    raw = Result(job_id="j1", status=JobStatus.OK, function="remove-bg", outputs=outputs)
    reads: list[str | None] = []

    async def read(output: ImageOutput) -> bytes:
        reads.append(output.ref)
        return png

    result = await typed_result(raw, read)
    assert reads == ["results/j1/stored"]
    assert result.image("stored").size == (4, 3) and result.image_bytes("inline") == png
    with pytest.raises(MissingOutput, match="no scores output 'scores'") as missing:
        result.scores()
    assert str(missing.value).startswith("job j1 has no")  # not quoted like a KeyError


def test_deadlines_are_times_timedeltas_or_seconds() -> None:
    soon = as_deadline(timedelta(seconds=30))
    assert soon is not None and soon > datetime.now(UTC)
    assert as_deadline(None) is None
    with pytest.raises(TypeError, match="not bool"):
        as_deadline(True)


def _reply(result: Result) -> Any:
    return SimpleNamespace(data=result.model_dump_json().encode())


async def test_replies_nobody_waits_for_are_kept_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replies_module, "KEEP_RESULTS", 2)
    inbox = Replies(SimpleNamespace(new_inbox=lambda: "_INBOX.x"))  # type: ignore[arg-type]
    waiting = inbox.expect("j0")
    for n in range(4):
        await inbox._on_reply(_reply(failed(ErrorCode.BAD_IMAGE, f"j{n}")))
    await inbox._on_reply(SimpleNamespace(data=b"not a result"))  # type: ignore[arg-type]
    assert waiting.done() and waiting.result().job_id == "j0"
    assert [job for job in ("j1", "j2", "j3") if inbox.expect(job).done()] == ["j2", "j3"]


async def test_a_batch_stops_at_its_first_error_and_says_how_far_it_got() -> None:
    progress: list[tuple[int, int]] = []

    async def work(n: int) -> int:
        await asyncio.sleep(0)
        if n == 3:
            raise ValueError("three")
        return n

    with pytest.raises(ValueError, match="three") as raised:
        await each([1, 2, 3, 4, 5], work, concurrency=1, on_progress=lambda *p: progress.append(p))
    assert progress == [(1, 5), (2, 5)]
    assert raised.value.__notes__ == ["2 of 5 items were done before this error"]
    with pytest.raises(ValueError, match="at least 1"):
        await each([1], work, concurrency=0)
