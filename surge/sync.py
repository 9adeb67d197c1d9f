"""The sync face: `Surge` and `Job`, the same API as `AsyncSurge` without `await`.

    with Surge("nats://127.0.0.1:4222", creds="user.creds") as surge:
        job = surge.submit("photo.jpg")
        job.wait(timeout=60).mask.save("mask.png")

A `Surge` runs one private event loop in a daemon thread; every call runs the async
face's coroutine there and blocks until it ends. Callbacks (`on_progress`) run in that
thread, so they must not call the client themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from function.contract.lifecycle import JobView
from function.contract.nats_auth import NatsAuth
from function.contract.settings import DEFAULT_FUNCTION, Priority
from surge._batch import Progress
from surge._inputs import ImageInput
from surge._loop import LoopThread
from surge.aio import AsyncJob, AsyncSurge, Deadline
from surge.results import JobResult

__all__ = ["Job", "Surge"]


class Job:
    """A handle on one job: its `id`, `status()`, `result()`, `wait()` and `cancel()`."""

    def __init__(self, job: AsyncJob, loop: LoopThread) -> None:
        self._job = job
        self._loop = loop
        self.id = job.id
        self.function = job.function

    def __repr__(self) -> str:
        return repr(self._job).replace("<AsyncJob", "<Job", 1)

    def status(self) -> JobView:
        """See `AsyncJob.status`."""
        return self._loop.run(self._job.status())

    def result(self, timeout: float = 60.0) -> JobResult:
        """See `AsyncJob.result`: the result, ok or not; `JobTimeout` if none in time."""
        return self._loop.run(self._job.result(timeout))

    def wait(self, timeout: float = 60.0) -> JobResult:
        """See `AsyncJob.wait`: the result, or `JobFailed`/`JobCancelled`/`JobExpired`."""
        return self._loop.run(self._job.wait(timeout))

    def cancel(self) -> JobView:
        """See `AsyncJob.cancel`."""
        return self._loop.run(self._job.cancel())


class Surge:
    """A connection to Surge over NATS, connected at once (see `AsyncSurge` for the
    arguments); use it in a `with` block or `close()` it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        creds: str | Path | NatsAuth | None = None,
        tenant: str | None = None,
        wait_s: float = 10.0,
    ) -> None:
        self._loop = LoopThread()
        try:
            self._surge = self._loop.run(
                AsyncSurge.connect(url, creds=creds, tenant=tenant, wait_s=wait_s)
            )
        except BaseException:
            self._loop.close()
            raise
        self.url, self.tenant = self._surge.url, tenant

    def close(self) -> None:
        """Drain the connection and stop the client's thread; safe to call twice."""
        if self._loop.closed:
            return
        try:
            self._loop.run(self._surge.close())
        finally:
            self._loop.close()

    def __enter__(self) -> Surge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def submit(
        self,
        image: ImageInput,
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.NORMAL,
        deadline: Deadline = None,
        job_id: str | None = None,
    ) -> Job:
        """See `AsyncSurge.submit`."""
        job = self._loop.run(
            self._surge.submit(
                image,
                function=function,
                outputs=outputs,
                priority=priority,
                deadline=deadline,
                job_id=job_id,
            )
        )
        return Job(job, self._loop)

    def submit_many(
        self,
        images: Iterable[ImageInput],
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.NORMAL,
        deadline: Deadline = None,
        on_progress: Progress | None = None,
        concurrency: int = 16,
    ) -> list[Job]:
        """See `AsyncSurge.submit_many`."""
        jobs = self._loop.run(
            self._surge.submit_many(
                images,
                function=function,
                outputs=outputs,
                priority=priority,
                deadline=deadline,
                on_progress=on_progress,
                concurrency=concurrency,
            )
        )
        return [Job(job, self._loop) for job in jobs]

    def call(
        self,
        image: ImageInput,
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.HIGH,
        timeout: float = 60.0,
    ) -> JobResult:
        """See `AsyncSurge.call`."""
        return self._loop.run(
            self._surge.call(
                image, function=function, outputs=outputs, priority=priority, timeout=timeout
            )
        )

    def job(self, job_id: str) -> Job:
        """See `AsyncSurge.job`."""
        return Job(self._surge.job(job_id), self._loop)

    def results(
        self, jobs: Iterable[Job], timeout: float = 60.0, on_progress: Progress | None = None
    ) -> list[JobResult]:
        """See `AsyncSurge.results`."""
        handles = [job._job for job in jobs]
        return self._loop.run(self._surge.results(handles, timeout, on_progress))
