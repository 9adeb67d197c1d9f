"""Submitting a job over HTTP without waiting for it: `POST /v1/jobs/{function}`.

    POST /v1/jobs/remove-bg?priority=high&output=mask&webhook=https://example.com/hook
    202 {"job_id": "...", "status_url": "/v1/jobs/<id>", "state": "queued"}
        Location: /v1/jobs/<id>

The body is what `/v1/infer` takes (image bytes, a multipart upload, a JSON envelope).
The job is checked as a worker would parse it, then published to the queue like any
other (the caller's tenant's stream with auth on, so its quotas hold), with a ticket so
`GET /v1/jobs/{id}` follows it. With a `webhook` (query or `Surge-Webhook` header) its
final result, whatever it is, is POSTed there signed (`function.transport.webhooks`).

Refusals are an `ErrorBody`: 404 `unknown_function` (another worker's function), 400
`bad_envelope` (a bad `Surge-Job-Id`), 422 `bad_envelope` (a bad webhook URL, webhooks
off, a job that does not parse), 413, 429 `quota_exceeded` (the tenant's quota), 503
`not_ready` with `Retry-After` (no NATS, or the tenant has no stream).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel

from function.client import SurgeClient
from function.contract.bounds import quote
from function.contract.errors import BadInput, ErrorCode, SurgeError
from function.contract.lifecycle import JobState
from function.contract.parse import CLOUDEVENTS_JSON, is_valid_job_id, job_headers, parse_job
from function.contract.quota import QuotaExceeded
from function.contract.settings import Header as H
from function.contract.settings import Priority, job_subject
from function.contract.webhooks import webhook_url_problem
from function.contract.wire import ErrorInfo, JobRequest
from function.http.body import Upload, read_upload
from function.http.jobs import BAD_ID, ErrorBody
from function.http.openapi import HTTP_STATUS, INFER_REQUEST_BODY

if TYPE_CHECKING:
    from function.http.func import Function

__all__ = ["Accepted", "submit_router"]

NO_SECRET: Final = (
    "this server sends no webhooks: an operator sets SURGE_WEBHOOK_SECRET to turn them on"
)
_JSON_TYPES: Final = frozenset({"application/json", CLOUDEVENTS_JSON})


class Accepted(BaseModel):
    """A job taken: follow it at `status_url` (`GET`), cancel it there (`DELETE`)."""

    job_id: str
    status_url: str
    state: JobState = JobState.QUEUED


class _Refused(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _refusal(exc: _Refused) -> JSONResponse:
    body = ErrorBody(error=ErrorInfo(code=exc.code, message=exc.message))
    retry = exc.status in (429, 503)
    headers = {"Retry-After": "1"} if retry else None
    return JSONResponse(body.model_dump(mode="json"), status_code=exc.status, headers=headers)


def _responses() -> dict[int | str, dict[str, Any]]:
    notes = {
        400: f"`bad_envelope`: {BAD_ID}",
        401: "with authentication on: no valid bearer token",
        403: "with authentication on: the tenant may not call this function",
        404: "`unknown_function`: this worker serves another function",
        413: "`payload_too_large`: over `SURGE_MAX_PAYLOAD_BYTES`",
        422: "`bad_envelope`: a bad webhook URL, webhooks off, or a job that does not parse",
        429: "`quota_exceeded`: the tenant's quota (`Retry-After`)",
        503: "`not_ready` with `Retry-After`: not connected to NATS, or no stream to take it",
    }
    return {
        202: {"model": Accepted, "description": "Queued; `Location` is its status URL"},
        **{status: {"model": ErrorBody, "description": note} for status, note in notes.items()},
    }


def submit_router(fn: Function) -> APIRouter:
    """`POST /v1/jobs/{function}` over `fn`'s worker connection; include it with the app's
    auth dependency (it sets `request.state.tenant`)."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

    def check(function: str, given_id: str | None, webhook: str | None) -> str:
        """The job's id; `_Refused` for what can be told before the body is read."""
        settings = fn.settings
        if function != settings.function:
            message = f"this worker serves {settings.function!r}, not {quote(function)}"
            raise _Refused(404, ErrorCode.UNKNOWN_FUNCTION, message)
        if given_id is not None and not is_valid_job_id(given_id):
            raise _Refused(400, ErrorCode.BAD_ENVELOPE, BAD_ID)
        if webhook is not None:
            problem = webhook_url_problem(webhook, settings.webhook_allow_hosts)
            if problem is not None:
                raise _Refused(422, ErrorCode.BAD_ENVELOPE, f"webhook: {problem}")
            if settings.webhook_secret is None:
                raise _Refused(422, ErrorCode.BAD_ENVELOPE, NO_SECRET)
        return given_id or uuid.uuid4().hex

    def parsed(
        upload: Upload, job_id: str, priority: Priority, request: Request, extra: dict[str, str]
    ) -> JobRequest:
        """The job as a worker will parse it (`_Refused` with its code when it does not)."""
        settings, tenant = fn.settings, getattr(request.state, "tenant", None)
        headers = job_headers(job_id, content_type=upload.content_type, tenant=tenant) | extra
        deadline = request.headers.get(H.DEADLINE)
        if deadline is not None:
            headers[H.DEADLINE] = deadline
        try:
            return parse_job(
                job_subject(priority, settings.function, tenant),
                headers,
                upload.data,
                max_payload=settings.max_payload_bytes,
                webhook_hosts=settings.webhook_allow_hosts,
            )
        except BadInput as exc:
            raise _Refused(HTTP_STATUS.get(exc.code, 422), exc.code, exc.message) from exc

    @router.post(
        "/{function}",
        summary="Submit a job and answer at once (202); its result by status or webhook",
        status_code=202,
        response_model=Accepted,
        responses=_responses(),
        openapi_extra={"requestBody": INFER_REQUEST_BODY},
    )
    async def submit(
        request: Request,
        function: Annotated[str, Path(description="Function name, e.g. remove-bg")],
        priority: Annotated[Literal["normal", "high"], Query()] = "normal",
        output: Annotated[
            str | None, Query(description="Outputs to return, a comma list (`Surge-Outputs`).")
        ] = None,
        webhook: Annotated[
            str | None,
            Query(description="A URL the final result is POSTed to, signed (`Surge-Webhook`)."),
        ] = None,
        surge_webhook: Annotated[str | None, Header()] = None,
        surge_job_id: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        tenant = getattr(request.state, "tenant", None)
        url = webhook if webhook is not None else surge_webhook
        asked = output if output is not None else request.headers.get("surge-outputs")
        try:
            job_id = check(function, surge_job_id, url)
            worker = fn.worker
            nc = worker.nc if worker is not None else None
            if nc is None or not nc.is_connected:
                raise _Refused(503, ErrorCode.NOT_READY, "the worker is not connected to NATS")
            upload = await read_upload(request, fn.settings.max_payload_bytes)
            extra = {H.OUTPUTS: asked} if asked else {}
            if url is not None:
                extra[H.WEBHOOK] = url
            job = parsed(upload, job_id, Priority(priority), request, extra)
            if upload.content_type in _JSON_TYPES and len(upload.data) > nc.max_payload - 4096:
                raise _Refused(
                    413,
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    "a JSON body must fit one NATS message: send a large image itself "
                    "(raw bytes or a multipart upload)",
                )
            client = SurgeClient(nc, tenant=tenant, tickets=True)
            await client.submit(
                upload.data,
                function=function,
                priority=priority,
                job_id=job.job_id,
                content_type=upload.content_type,
                outputs=job.outputs,
                deadline=job.deadline,
                webhook=job.webhook,
            )
        except BadInput as exc:  # the body itself (too large, a malformed upload)
            return _refusal(_Refused(HTTP_STATUS.get(exc.code, 400), exc.code, exc.message))
        except _Refused as exc:
            return _refusal(exc)
        except QuotaExceeded as exc:
            return _refusal(_Refused(429, ErrorCode.QUOTA_EXCEEDED, str(exc)))
        except (SurgeError, TimeoutError, NatsError) as exc:
            message = f"the job was not queued: {exc}"
            return _refusal(_Refused(503, ErrorCode.NOT_READY, message))
        status_url = f"/v1/jobs/{job.job_id}"
        accepted = Accepted(job_id=job.job_id, status_url=status_url)
        return JSONResponse(
            accepted.model_dump(mode="json"), status_code=202, headers={"Location": status_url}
        )

    return router
