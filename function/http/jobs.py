"""Following and stopping one job over HTTP.

    GET    /v1/jobs/{job_id}  200 the `JobView`; 404 (state `unknown`) with no record
    DELETE /v1/jobs/{job_id}  200 now cancelled; 409 already final (detail "already ...");
                              404 unknown

Both read only the caller's own records (its tenant's with auth on, else open jobs'). An
id that is not one NATS subject token is refused (400 `bad_envelope`) before anything is
sent; a worker not connected to NATS answers 503 `not_ready` with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Final

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel

from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobState, JobView
from function.contract.parse import is_valid_job_id
from function.contract.wire import ErrorInfo, Result
from function.transport.lifecycle import JobLifecycle

if TYPE_CHECKING:
    from function.http.func import Function

__all__ = ["ErrorBody", "jobs_router"]

BAD_ID: Final = (
    "a job id is 1 to 256 printable ASCII characters, one NATS subject token: "
    "no '.', '*', '>' or spaces"
)

JobId = Annotated[str, Path(description="The id `submit` returned (`Surge-Job-Id`).")]


class ErrorBody(BaseModel):
    """A refused request to the jobs routes (bad id, worker not connected)."""

    error: ErrorInfo


def _refused(status: int, code: ErrorCode, message: str) -> JSONResponse:
    body = ErrorBody(error=ErrorInfo(code=code, message=message))
    headers = {"Retry-After": "1"} if code is ErrorCode.NOT_READY else None
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _view(view: JobView, status: int) -> JSONResponse:
    return JSONResponse(view.model_dump(mode="json"), status_code=status)


def _responses(ok: str, views: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The documented answers: `ok` (200), `views` (status -> note, each a `JobView`) and
    the refusals every jobs route shares."""
    return {
        200: {"description": ok},
        400: {"model": ErrorBody, "description": f"`bad_envelope`: {BAD_ID}"},
        401: {"model": Result, "description": "with authentication on: no valid bearer token"},
        403: {"model": Result, "description": "with authentication on: function not allowed"},
        **{status: {"model": JobView, "description": note} for status, note in views.items()},
        503: {
            "model": ErrorBody,
            "description": "`not_ready` with `Retry-After`: not connected to NATS",
        },
    }


def jobs_router(fn: Function) -> APIRouter:
    """`GET` and `DELETE /v1/jobs/{job_id}` over `fn`'s worker connection; include it
    with the app's auth dependency (it sets `request.state.tenant`)."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

    async def answer(
        request: Request, job_id: str, ask: Callable[[JobLifecycle], Awaitable[JobView]]
    ) -> JobView | JSONResponse:
        """`ask`'s view, or the refusal: a bad id (before anything is sent), no NATS."""
        if not is_valid_job_id(job_id):
            return _refused(400, ErrorCode.BAD_ENVELOPE, BAD_ID)
        worker = fn.worker
        nc = worker.nc if worker is not None else None
        if nc is None or not nc.is_connected:
            return _refused(503, ErrorCode.NOT_READY, "the worker is not connected to NATS")
        try:
            tenant = getattr(request.state, "tenant", None)
            return await ask(JobLifecycle(nc, tenant, webhooks=True))
        except (TimeoutError, NatsError) as exc:
            return _refused(503, ErrorCode.NOT_READY, f"NATS did not answer: {exc!r}")

    @router.get(
        "/{job_id}",
        summary="A job's state: queued, running, done, failed, cancelled, expired",
        response_model=JobView,
        responses=_responses(
            "The job's view; `result` once it is final",
            {404: "No record for this id (state `unknown`)"},
        ),
    )
    async def job_status(request: Request, job_id: JobId) -> JSONResponse:
        view = await answer(request, job_id, lambda jobs: jobs.status(job_id))
        if isinstance(view, JSONResponse):
            return view
        return _view(view, 404 if view.state is JobState.UNKNOWN else 200)

    @router.delete(
        "/{job_id}",
        summary="Cancel a queued or running job",
        response_model=JobView,
        responses=_responses(
            "Cancelled now: removed from the queue, or its running output dropped",
            {
                404: "Nothing to cancel: no record for this id (state `unknown`)",
                409: "Already final (done, failed, expired or cancelled): left as it is",
            },
        ),
    )
    async def job_cancel(request: Request, job_id: JobId) -> JSONResponse:
        view = await answer(request, job_id, lambda jobs: jobs.cancel(job_id))
        if isinstance(view, JSONResponse):
            return view
        if view.state is JobState.UNKNOWN:
            return _view(view, 404)
        now = view.state is JobState.CANCELLED and not view.detail.startswith("already")
        return _view(view, 200 if now else 409)

    return router
