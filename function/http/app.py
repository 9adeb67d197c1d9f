"""The HTTP surface (FastAPI): probes, metrics, direct inference and CloudEvents.

    GET  /health/liveness     200, or 500 when the process is stuck or failed to start
    GET  /health/readiness    200 once the model is warm and the consumer attached, else 503
    GET  /metrics             Prometheus text
    POST /v1/infer/{function} image bytes or JSON envelope -> the queue path's result JSON
    POST /                    CloudEvents (binary or structured) -> a CloudEvent with the result
    GET  /docs                OpenAPI

Bodies over `SURGE_MAX_PAYLOAD_BYTES` are refused before they are read whole. With
`SURGE_HTTP_AUTH_*` configured, `/v1/infer` and `POST /` need `Authorization: Bearer`
(`function.http.auth`); probes, `/metrics` and `/docs` stay open.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Header, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from function.contract.errors import BadInput, ErrorCode, JobError
from function.contract.http_auth import HttpAuthSettings
from function.contract.parse import check_tenant_blob, parse_job
from function.contract.settings import Header as H
from function.contract.settings import Priority, job_subject
from function.contract.wire import ErrorInfo, JobStatus, Result, Timings
from function.http.auth import Authenticator, AuthRejected, bearer_auth, rejection_response
from function.telemetry import METRICS, bind, context_from_headers, trace_id_of

if TYPE_CHECKING:
    from function.http.func import Function

__all__ = ["HTTP_STATUS", "create_app"]

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_IMAGE: 400,
    ErrorCode.BAD_ENVELOPE: 422,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_PIXELS: 413,
    ErrorCode.UNKNOWN_FUNCTION: 404,
    ErrorCode.INPUT_NOT_FOUND: 422,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INFERENCE_FAILED: 503,
    ErrorCode.MAX_DELIVER_EXCEEDED: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.RESULT_TOO_LARGE: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
}
_tracer = trace.get_tracer("surge")


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to be over `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadInput(ErrorCode.PAYLOAD_TOO_LARGE, f"body is {declared} bytes, limit {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(ErrorCode.PAYLOAD_TOO_LARGE, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(fn: Function, auth: HttpAuthSettings | None = None) -> FastAPI:
    """The FastAPI application serving `fn`; `auth` (default: from `SURGE_HTTP_AUTH_*`) is
    loaded here, once, and a broken configuration raises `HttpAuthError`."""
    authenticator = Authenticator.from_settings(auth or HttpAuthSettings.from_env())
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

    async def _infer(request: Request, function: str, given_id: str | None) -> Result:
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
                body = await _read_limited(request, settings.max_payload_bytes)
                wire = (
                    {H.CONTENT_TYPE: headers.get("content-type", "")}
                    if headers.get("content-type")
                    else {}
                )
                wire.update({k: v for k, v in headers.items() if k.startswith("ce-")})
                if "surge-outputs" in headers:
                    wire[H.OUTPUTS] = headers["surge-outputs"]
                if given_id:
                    wire[H.MSG_ID] = given_id
                job = parse_job(
                    job_subject(Priority.HIGH, function),
                    wire,
                    body,
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

    def _status(result: Result) -> int:
        return HTTP_STATUS[result.error.code] if result.error else 200

    @app.post(
        "/v1/infer/{function}",
        summary="Synchronous inference: image bytes or a JSON envelope",
        response_model=Result,
        dependencies=authenticated,
    )
    async def infer(
        request: Request,
        function: Annotated[str, Path(description="Function name, e.g. remove-bg")],
        surge_job_id: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        result = await _infer(request, function, surge_job_id)
        headers = (
            {"Retry-After": "1"}
            if result.error and result.error.code is ErrorCode.NOT_READY
            else None
        )
        return JSONResponse(
            result.model_dump(mode="json"), status_code=_status(result), headers=headers
        )

    @app.post(
        "/",
        summary="CloudEvents (binary or structured mode); replies with a CloudEvent",
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
        status = _status(result)
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
