"""The async face: `AsyncSurge` (a connection) and `AsyncJob` (one submitted job).

    async with AsyncSurge("nats://127.0.0.1:4222") as surge:
        job = await surge.submit(Path("photo.jpg"))
        print((await job.status()).state)            # queued, running, done...
        result = await job.wait(timeout=60)          # JobFailed if it did not succeed
        result.mask.save("mask.png")

Results are pushed to this client's own inbox and, where a push was missed (a result
that came before you asked, a job submitted elsewhere), read from the results store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from nats.errors import ConnectionClosedError, ConnectionDrainingError

from function.client import SurgeClient
from function.contract.lifecycle import JobState, JobView
from function.contract.nats_auth import NatsAuth
from function.contract.parse import is_valid_job_id
from function.contract.settings import DEFAULT_FUNCTION, Priority
from function.contract.wire import Result
from function.transport.lifecycle import JobLifecycle
from surge._batch import Progress, each
from surge._inputs import ImageInput, as_deadline, image_bytes
from surge._replies import Replies
from surge.errors import JobTimeout, NotConnected
from surge.results import JobResult, typed_result

__all__ = ["DEFAULT_URL", "AsyncJob", "AsyncSurge", "Deadline"]

DEFAULT_URL = "nats://127.0.0.1:4222"
URL_ENV = "SURGE_NATS_URL"
Deadline = datetime | timedelta | float | None

_FUNCTION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_FIRST_POLL_S = 0.25  # how soon a waiting job first looks in the store (then doubling)
_MAX_POLL_S = 5.0


class AsyncJob:
    """A handle on one job: its `id`, `status()`, `result()`, `wait()` and `cancel()`."""

    def __init__(self, surge: AsyncSurge, job_id: str, function: str | None = None) -> None:
        self._surge = surge
        self.id = job_id
        self.function = function

    def __repr__(self) -> str:
        return f"<AsyncJob {self.id} {self.function or ''}>".replace(" >", ">")

    async def status(self) -> JobView:
        """Where the job is now: queued (with the backlog ahead), running (which worker,
        since when), done / failed / cancelled / expired (with the result), or unknown."""
        return await self._surge._status(self.id)

    async def result(self, timeout: float = 60.0) -> JobResult:
        """The job's final result, ok or not (see `JobResult.ok`); `JobTimeout` (naming
        its last known state) if none comes within `timeout` seconds."""
        return await self._surge._result(self.id, timeout)

    async def wait(self, timeout: float = 60.0) -> JobResult:
        """Like `result`, but raise `JobFailed`, `JobCancelled` or `JobExpired` unless ok."""
        return (await self.result(timeout)).raise_for_error()

    async def cancel(self) -> JobView:
        """Cancel the job if it is queued or running; its state afterwards (a finished
        job is left as it is, and its view says so)."""
        return await self._surge._cancel(self.id)


class AsyncSurge:
    """A connection to Surge over NATS: submit images, follow and cancel jobs.

    `url` defaults to `$SURGE_NATS_URL`, else `nats://127.0.0.1:4222`. `creds` is a
    `.creds` file or a `NatsAuth`; otherwise credentials and TLS come from the
    `SURGE_NATS_*` environment. A `tenant` client submits on its tenant's subjects.
    Use `async with AsyncSurge(...) as surge:` or `surge = await AsyncSurge.connect(...)`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        creds: str | Path | NatsAuth | None = None,
        tenant: str | None = None,
        wait_s: float = 10.0,
    ) -> None:
        self.url = url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.tenant = tenant
        self._auth = creds if isinstance(creds, NatsAuth | None) else NatsAuth(creds=Path(creds))
        self._wait_s = wait_s
        self._client: SurgeClient | None = None
        self._replies: Replies | None = None
        self._jobs: JobLifecycle | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        creds: str | Path | NatsAuth | None = None,
        tenant: str | None = None,
        wait_s: float = 10.0,
    ) -> AsyncSurge:
        """A connected client (see the class for the arguments); `close()` it when done."""
        return await cls(url, creds=creds, tenant=tenant, wait_s=wait_s).open()

    async def open(self) -> AsyncSurge:
        """Connect (`NatsConnectError` or `NatsUnreachable` if that fails)."""
        if self._closed:
            raise NotConnected("this client is closed: make a new one")
        if self._client is None:
            client = await SurgeClient.connect(
                self.url, self._auth, tenant=self.tenant, wait_s=self._wait_s
            )
            try:
                self._replies = await Replies(client.nc).start()
            except BaseException:
                await client.nc.close()
                raise
            self._jobs = JobLifecycle(client.nc, self.tenant)
            self._client = client
        return self

    async def close(self) -> None:
        """Stop listening and drain the connection; the client cannot be used again."""
        self._closed = True
        client, self._client = self._client, None
        if self._replies is not None:
            replies, self._replies = self._replies, None
            with contextlib.suppress(Exception):
                await replies.close()
        if client is not None and not client.nc.is_closed:
            await client.nc.drain()

    async def __aenter__(self) -> AsyncSurge:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- submitting ---------------------------------------------------------------------

    async def submit(
        self,
        image: ImageInput,
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.NORMAL,
        deadline: Deadline = None,
        job_id: str | None = None,
    ) -> AsyncJob:
        """Queue one job and return its handle once JetStream has stored it.

        `image`: encoded bytes, a file path, or a PIL image (sent as PNG). `outputs`:
        which outputs to make (e.g. `("mask", "cutout")`; default: the function's own).
        `deadline`: a datetime, or a timedelta / seconds from now; a job past it is
        never started. Raises `QuotaExceeded` when a tenant's quota refuses it.
        """
        options = _options(function, outputs, priority)
        data = await image_bytes(image)
        client, replies = self._connected()
        with _connection_errors():
            submitted = await client.submit(
                data,
                function=function,
                priority=options[1],
                job_id=job_id,
                outputs=options[0],
                reply_to=replies.subject,
                deadline=as_deadline(deadline),
            )
        return AsyncJob(self, submitted, function)

    async def submit_many(
        self,
        images: Iterable[ImageInput],
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.NORMAL,
        deadline: Deadline = None,
        on_progress: Progress | None = None,
        concurrency: int = 16,
    ) -> list[AsyncJob]:
        """Submit every image (at most `concurrency` at a time); the jobs in the images'
        order. `on_progress(done, total)` is called as each job is accepted. The first
        error stops the batch and is raised (its note says how many were accepted)."""
        _options(function, outputs, priority)
        outputs = tuple([outputs] if isinstance(outputs, str) else outputs)

        async def one(image: ImageInput) -> AsyncJob:
            return await self.submit(
                image, function=function, outputs=outputs, priority=priority, deadline=deadline
            )

        jobs = await each(
            list(images), one, concurrency=concurrency, on_progress=on_progress, what="jobs"
        )
        return [job for job in jobs if job is not None]

    async def call(
        self,
        image: ImageInput,
        *,
        function: str = DEFAULT_FUNCTION,
        outputs: Iterable[str] = (),
        priority: Priority | str = Priority.HIGH,
        timeout: float = 60.0,
    ) -> JobResult:
        """Submit one job and wait for its result (request/response; `high` priority by
        default); `JobTimeout` if none comes within `timeout` seconds."""
        outputs, priority = _options(function, outputs, priority)
        data = await image_bytes(image)
        client, _ = self._connected()
        with _connection_errors():
            try:
                result = await client.call(
                    data, function=function, priority=priority, outputs=outputs, timeout=timeout
                )
            except TimeoutError as exc:
                raise JobTimeout(None, timeout, JobState.UNKNOWN) from exc
            return await self._typed(result)

    def job(self, job_id: str) -> AsyncJob:
        """A handle on a job submitted earlier (by this client or any other)."""
        if not is_valid_job_id(job_id):
            raise ValueError(f"job id {job_id[:64]!r}: one NATS subject token, no '.', '*', '>'")
        return AsyncJob(self, job_id)

    async def results(
        self,
        jobs: Iterable[AsyncJob],
        timeout: float = 60.0,
        on_progress: Progress | None = None,
    ) -> list[JobResult]:
        """Every job's result, gathered as they arrive, in the jobs' order;
        `on_progress(done, total)` after each. `JobTimeout` names the jobs still missing
        after `timeout` seconds and carries the results that did come (`completed`)."""
        wanted = list(jobs)
        found = await each(
            wanted,
            lambda job: self._wait_for(job.id, timeout),
            concurrency=max(1, len(wanted)),
            on_progress=on_progress,
            what="results",
        )
        missing = [job.id for job, result in zip(wanted, found, strict=True) if result is None]
        done = [result for result in found if result is not None]
        if missing:
            state = await self._last_state(missing[0])
            raise JobTimeout(missing[0], timeout, state, missing=missing, completed=done)
        return done

    # -- following (what the job handles call) ------------------------------------------

    async def _status(self, job_id: str) -> JobView:
        self._connected()
        assert self._jobs is not None
        with _connection_errors():
            return await self._jobs.status(job_id)

    async def _cancel(self, job_id: str) -> JobView:
        self._connected()
        assert self._jobs is not None
        with _connection_errors():
            return await self._jobs.cancel(job_id)

    async def _result(self, job_id: str, timeout: float) -> JobResult:
        found = await self._wait_for(job_id, timeout)
        if found is None:
            raise JobTimeout(job_id, timeout, await self._last_state(job_id))
        return found

    async def _wait_for(self, job_id: str, timeout: float) -> JobResult | None:
        """The job's result, pushed or stored; None if none within `timeout` seconds."""
        client, replies = self._connected()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        pushed = replies.expect(job_id)
        pause = _FIRST_POLL_S
        try:
            with _connection_errors():
                found: Result | None = await client.result(job_id)  # came before we asked
                while found is None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    await asyncio.wait({pushed}, timeout=min(remaining, pause))
                    if pushed.cancelled():  # `close()` while waiting
                        raise NotConnected("the client was closed while waiting for a result")
                    found = pushed.result() if pushed.done() else await client.result(job_id)
                    pause = min(2 * pause, _MAX_POLL_S)
                return await self._typed(found)
        finally:
            replies.forget(job_id, pushed)

    async def _last_state(self, job_id: str) -> JobState:
        """The job's state for a timeout's message (unknown if even that cannot be read)."""
        try:
            return (await self._status(job_id)).state
        except Exception:
            return JobState.UNKNOWN

    async def _typed(self, result: Result) -> JobResult:
        client, _ = self._connected()
        return await typed_result(result, client.output_bytes)

    def _connected(self) -> tuple[SurgeClient, Replies]:
        if self._client is None or self._replies is None:
            raise NotConnected(
                "this client is closed"
                if self._closed
                else "not connected: use `async with AsyncSurge(...)` or AsyncSurge.connect()"
            )
        if self._client.nc.is_closed:
            raise NotConnected(f"the connection to NATS at {self.url} is closed")
        return self._client, self._replies


def _options(
    function: str, outputs: Iterable[str], priority: Priority | str
) -> tuple[tuple[str, ...], Priority]:
    """Checked job options: (outputs, priority); `ValueError` names what is wrong."""
    if not _FUNCTION.match(function):
        raise ValueError(f"function {function[:64]!r}: lower-case letters, digits, '-', '_'")
    try:
        chosen = Priority(priority)
    except ValueError:
        raise ValueError(f"priority {str(priority)[:32]!r}: 'high' or 'normal'") from None
    return tuple([outputs] if isinstance(outputs, str) else outputs), chosen


@contextlib.contextmanager
def _connection_errors() -> Iterator[None]:
    """nats-py's closed-connection errors as `NotConnected`."""
    try:
        yield
    except (ConnectionClosedError, ConnectionDrainingError) as exc:
        raise NotConnected(f"the connection to NATS is closed ({type(exc).__name__})") from exc
