"""The HTTP surface (FastAPI): probes, metrics, direct inference and CloudEvents.

    GET  /health/liveness     200, or 500 when the process is stuck or failed to start
    GET  /health/readiness    200 once the model is warm and the consumer attached, else 503
    GET  /metrics             Prometheus text
    POST /v1/infer/{function} image bytes, multipart upload or JSON envelope -> the queue
                              path's result JSON, or with `Accept: image/png` the image itself
    POST /v1/jobs/{function}  queue a job, answer 202 with its id and status URL at once;
                              an optional webhook gets its result (`function.http.submit`)
    GET  /v1/jobs/{job_id}    a job's state (`JobView`); 404 unknown (`function.http.jobs`)
    DELETE /v1/jobs/{job_id}  cancel it: 200 cancelled, 409 already final, 404 unknown
    POST /                    CloudEvents (binary or structured) -> a CloudEvent with the result
    GET  /docs                OpenAPI

Bodies over `SURGE_MAX_PAYLOAD_BYTES` are refused before they are read whole
(`function.http.body`); `function.http.negotiate` picks JSON or the image, and
`function.http.openapi` maps error codes to statuses and documents them. With
`SURGE_HTTP_AUTH_*` configured, `/v1/infer`, `/v1/jobs` and `POST /` need
`Authorization: Bearer` (`function.http.auth`); probes, `/metrics` and `/docs` stay open.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from function.contract.errors import ErrorCode, JobError
from function.contract.http_auth import HttpAuthSettings
from function.contract.parse import check_tenant_blob, parse_job
from function.contract.settings import Header as H
from function.contract.settings import Priority, job_subject
from function.contract.wire import ErrorInfo, JobStatus, Result, Timings
from function.http.auth import Authenticator, AuthRejected
from function.http.bearer import bearer_auth, rejection_response
from function.http.body import read_upload
from function.http.jobs import jobs_router
from function.http.negotiate import IMAGE_DEFAULTS, NotAcceptable, pick_image, wants_image
from function.http.openapi import (
    INFER_REQUEST_BODY,
    NOT_ACCEPTABLE,
    error_responses,
    infer_responses,
    status_of,
)
from function.http.submit import submit_router
from function.telemetry import METRICS, bind, context_from_headers, trace_id_of

if TYPE_CHECKING:
    from function.http.func import Function

__all__ = ["create_app"]

_tracer = trace.get_tracer("surge")


def create_app(
    fn: Function, authenticator: Authenticator | Literal["env"] | None = "env"
) -> FastAPI:
    """The FastAPI application serving `fn`: auth from `SURGE_HTTP_AUTH_*` by default
    (a broken configuration raises `HttpAuthError`), or `authenticator`; None: auth off."""
    if authenticator == "env":
        authenticator = Authenticator.from_settings(HttpAuthSettings.from_env())
    app = FastAPI(
        title="Surge function",
        summary="Scale-to-zero ONNX inference; the same jobs as the NATS queue, over HTTP.",
        version="0.1.0",
    )
    authenticated = [Depends(bearer_auth(authenticator, lambda: fn.settings.function))]

    async def refused(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, AuthRejected):
            raise exc
        return rejection_response(exc, fn.settings.function)

    app.add_exception_handler(AuthRejected, refused)
    app.include_router(submit_router(fn), dependencies=authenticated)
    app.include_router(jobs_router(fn), dependencies=authenticated)

    def _probe(result: tuple[bool, str], bad_status: int) -> PlainTextResponse:
        ok, message = result
        return PlainTextResponse(message, status_code=200 if ok else bad_status)

    @app.get("/health/liveness", summary="Liveness: false only when truly stuck")
    async def liveness() -> PlainTextResponse:
        return _probe(fn.alive(), 500)

    @app.get("/health/readiness", summary="Readiness: warm and consuming")
    async def readiness() -> PlainTextResponse:
        return _probe(fn.ready(), 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _infer(
        request: Request, function: str, given_id: str | None, asked: str | None = None
    ) -> Result:
        settings = fn.settings
        start = time.perf_counter()
        headers = dict(request.headers)
        ctx = context_from_headers(headers)
        job_id = given_id or uuid.uuid4().hex
        tenant = getattr(request.state, "tenant", None)
        with (
            _tracer.start_as_current_span("surge.job", context=ctx, kind=trace.SpanKind.SERVER),
            bind(job_id=job_id, tenant=tenant),
        ):
            trace_id = trace_id_of(trace.get_current_span())
            base = {"job_id": job_id, "function": function, "trace_id": trace_id, "tenant": tenant}
            try:
                if function != settings.function:
                    raise JobError(
                        ErrorCode.UNKNOWN_FUNCTION,
                        f"this worker serves {settings.function!r}, not {function!r}",
                    )
                worker = fn.worker
                if worker is None or worker.consumer is None or not worker.ready:
                    raise JobError(ErrorCode.NOT_READY, "the model is still warming up")
                upload = await read_upload(request, settings.max_payload_bytes)
                wire = {H.CONTENT_TYPE: upload.content_type} if upload.content_type else {}
                wire.update({k: v for k, v in headers.items() if k.startswith("ce-")})
                asked = asked if asked is not None else headers.get("surge-outputs")
                if asked is not None:
                    wire[H.OUTPUTS] = asked
                if given_id:
                    wire[H.MSG_ID] = given_id
                job = parse_job(
                    job_subject(Priority.HIGH, function),
                    wire,
                    upload.data,
                    stream="http",
                    sequence=uuid.uuid4().int >> 64,
                    max_payload=settings.max_payload_bytes,
                )
                base["job_id"] = job.job_id
                if tenant is not None:  # its own uploads only, from its own bucket
                    if job.image_ref is not None:
                        check_tenant_blob(job.image_ref, tenant)
                    job = job.model_copy(update={"tenant": tenant})
                try:
                    outputs, timings = await worker.consumer.infer_direct(job)
                except JobError:
                    raise
                except Exception as exc:
                    raise JobError(ErrorCode.INFERENCE_FAILED, f"inference failed: {exc}") from exc
            except JobError as exc:
                METRICS.jobs.labels(settings.function, "error", exc.code.value).inc()
                return Result.model_validate(
                    {
                        **base,
                        "status": JobStatus.ERROR,
                        "error": ErrorInfo(code=exc.code, message=exc.message),
                        "timings": Timings(total_ms=(time.perf_counter() - start) * 1000),
                    }
                )
            timings.total_ms = (time.perf_counter() - start) * 1000
            METRICS.jobs.labels(settings.function, "ok", "").inc()
            METRICS.latency.labels(settings.function).observe(timings.total_ms / 1000)
            return Result.model_validate(
                {
                    **base,
                    "status": JobStatus.OK,
                    "outputs": outputs,
                    "model": worker.consumer.model_info,
                    "timings": timings,
                }
            )

    def _json(result: Result, status: int, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(result.model_dump(mode="json"), status_code=status, headers=headers)

    @app.post(
        "/v1/infer/{function}",
        summary="Synchronous inference: image bytes, a multipart upload or a JSON envelope",
        description=(
            "Answers the queue path's result JSON; with `Accept: image/png` the image output "
            "itself (`?output=` picks which). Errors are the same `Result` with "
            "`status: error`."
        ),
        response_model=Result,
        responses=infer_responses(),
        openapi_extra={"requestBody": INFER_REQUEST_BODY},
        dependencies=authenticated,
    )
    async def infer(
        request: Request,
        function: Annotated[str, Path(description="Function name, e.g. remove-bg")],
        output: Annotated[
            str | None,
            Query(
                description="Which output (remove-bg: `mask` or `cutout`; a comma list for "
                "JSON). With `Accept: image/png` the image sent, by default "
                + ", ".join(f"`{o}` for {f}" for f, o in IMAGE_DEFAULTS.items())
                + ", else the function's first image output; overrides `Surge-Outputs`."
            ),
        ] = None,
        surge_job_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        image = wants_image(request.headers.get("accept"))
        if image and output is None and "surge-outputs" not in request.headers:
            output = IMAGE_DEFAULTS.get(function)
        result = await _infer(request, function, surge_job_id, output)
        vary = {"Vary": "Accept"}
        if result.error is None and image:
            try:
                name, picture = pick_image(result, output or request.headers.get("surge-outputs"))
            except NotAcceptable as exc:
                error = ErrorInfo(code=exc.code, message=exc.message)
                refused = result.model_copy(
                    update={"status": JobStatus.ERROR, "error": error, "outputs": {}}
                )
                return _json(refused, NOT_ACCEPTABLE, vary)
            headers = {**vary, H.JOB_ID: result.job_id, "Surge-Output": name}
            return Response(picture.payload(), media_type=picture.content_type, headers=headers)
        if result.error and result.error.code is ErrorCode.NOT_READY:
            vary["Retry-After"] = "1"
        return _json(result, status_of(result), vary)

    @app.post(
        "/",
        summary="CloudEvents (binary or structured mode); replies with a CloudEvent",
        responses=error_responses(),
        dependencies=authenticated,
    )
    async def cloudevent(request: Request) -> Response:
        structured = request.headers.get("content-type", "").startswith(
            "application/cloudevents+json"
        )
        result = await _infer(request, fn.settings.function, None)
        attributes = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": f"surge/{fn.settings.function}",
            "type": "dev.surge.result" if result.error is None else "dev.surge.error",
            "subject": result.job_id,
        }
        status = status_of(result)
        if structured:
            event: dict[str, object] = {**attributes, "datacontenttype": "application/json"}
            event["data"] = result.model_dump(mode="json")
            return JSONResponse(
                event, status_code=status, media_type="application/cloudevents+json"
            )
        ce_headers = {f"ce-{k}": v for k, v in attributes.items()}
        return Response(
            result.model_dump_json(),
            status_code=status,
            media_type="application/json",
            headers=ce_headers,
        )

    return app
