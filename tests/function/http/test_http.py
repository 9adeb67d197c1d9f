"""The Knative function's HTTP surface, lifecycle and observability, against real parts."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from function.client import SurgeClient
from function.contract.settings import WorkerSettings
from function.contract.wire import JobStatus, Result, ScoresOutput
from function.http.func import Function, new
from function.local.nats_server import EmbeddedNats
from function.models import LoadedModel
from function.telemetry import JsonFormatter, configure_tracing
from tests.helpers import asgi_client, gif_bytes, png_bytes, until_ready

_EXPORTER = InMemorySpanExporter()
configure_tracing("surge-tests", processor=SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
async def nsfw_function(nats_server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Function]:
    function = Function(
        WorkerSettings(nats_url=nats_server.url, function="nsfw", model_dir=model_dir)
    )
    function.start()
    await until_ready(function)
    yield function
    await function.drain()


def test_new_follows_the_knative_contract() -> None:
    function = new()
    for name in ("handle", "start", "stop", "alive", "ready"):
        assert callable(getattr(function, name))
    assert function.ready() == (False, "not started")
    assert function.alive() == (True, "OK")


async def test_start_returns_at_once_and_readiness_follows_warmup(
    nats_server: EmbeddedNats, model_dir: Path
) -> None:
    function = Function(
        WorkerSettings(nats_url=nats_server.url, function="remove-bg", model_dir=model_dir)
    )
    seen: list[str] = []

    def slow_hook(model: LoadedModel) -> None:
        seen.append(model.info.name)
        time.sleep(2.0)  # a model that takes seconds to load

    function.add_warmup_hook(slow_hook)
    began = time.monotonic()
    function.start({})
    assert time.monotonic() - began < 0.2
    async with asgi_client(function) as http:
        first = await http.get("/health/readiness")
        assert first.status_code == 503 and first.text == "warming"
        assert (await http.get("/health/liveness")).status_code == 200
        warming = await http.post("/v1/infer/remove-bg", content=png_bytes())
        assert warming.status_code == 503 and warming.headers["retry-after"] == "1"
        assert warming.json()["error"]["code"] == "not_ready"
        await until_ready(function)
        assert (await http.get("/health/readiness")).status_code == 200
        metrics = (await http.get("/metrics")).text
    assert seen == ["u2netp"]
    for phase in ("import", "fetch", "session", "warmup", "hooks", "total"):
        assert f'surge_cold_start_phase_seconds{{function="remove-bg",phase="{phase}"}}' in metrics
    await function.drain()
    assert function.ready() == (False, "stopped")


async def test_http_and_cloudevents_give_the_queue_result(
    nsfw_function: Function, client: SurgeClient, photos: dict[str, Path]
) -> None:
    image = photos["astronaut"].read_bytes()
    inbox = await client.inbox()
    job_id = await client.submit(image, function="nsfw", reply_to=inbox.subject)
    queued = (await inbox.wait([job_id], timeout=30))[job_id]
    assert queued.status is JobStatus.OK
    want = queued.outputs["scores"]
    assert isinstance(want, ScoresOutput)

    def scores(result: Result) -> dict[str, float]:
        got = result.outputs["scores"]
        assert isinstance(got, ScoresOutput)
        return got.scores

    async with asgi_client(nsfw_function) as http:
        raw = await http.post(
            "/v1/infer/nsfw", content=image, headers={"content-type": "image/png"}
        )
        assert raw.status_code == 200
        envelope = {"image": base64.b64encode(image).decode()}
        enveloped = await http.post(
            "/v1/infer/nsfw", json=envelope, headers={"surge-job-id": "http-1"}
        )
        binary = await http.post(
            "/",
            content=image,
            headers={
                "ce-specversion": "1.0",
                "ce-id": "ce-1",
                "ce-source": "t",
                "ce-type": "x",
                "content-type": "image/png",
            },
        )
        event = {
            "specversion": "1.0",
            "id": "ce-2",
            "source": "t",
            "type": "x",
            "datacontenttype": "image/png",
            "data_base64": base64.b64encode(image).decode(),
        }
        structured = await http.post(
            "/", content=json.dumps(event), headers={"content-type": "application/cloudevents+json"}
        )
    assert enveloped.json()["job_id"] == "http-1"
    assert (
        binary.headers["ce-type"] == "dev.surge.result" and binary.headers["ce-subject"] == "ce-1"
    )
    assert structured.headers["content-type"].startswith("application/cloudevents+json")
    results = [
        Result.model_validate(raw.json()),
        Result.model_validate(enveloped.json()),
        Result.model_validate(binary.json()),
        Result.model_validate(structured.json()["data"]),
    ]
    for result in results:
        assert result.status is JobStatus.OK
        assert result.model == queued.model
        assert scores(result) == pytest.approx(want.scores, abs=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/v1/infer/nsfw", b"\x00garbage" * 8, {}, 400, "bad_image"),
        ("/v1/infer/nsfw", gif_bytes(), {}, 415, "unsupported_media_type"),
        ("/v1/infer/nsfw", b"{", {"content-type": "application/json"}, 422, "bad_envelope"),
        (
            "/v1/infer/nsfw",
            b'{"image": 1}',
            {"content-type": "application/json"},
            422,
            "bad_envelope",
        ),
        ("/v1/infer/remove-bg", png_bytes(), {}, 404, "unknown_function"),
        ("/v1/infer/nsfw", b"x" * 2048, {}, 413, "payload_too_large"),
        ("/", b"{}", {"content-type": "application/cloudevents+json"}, 422, "bad_envelope"),
    ],
    ids=[
        "garbage",
        "gif",
        "bad-json",
        "bad-schema",
        "other-function",
        "too-large",
        "bad-cloudevent",
    ],
)
async def test_error_statuses(
    nats_server: EmbeddedNats,
    model_dir: Path,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    settings = WorkerSettings(
        nats_url=nats_server.url, function="nsfw", model_dir=model_dir, max_payload_bytes=1024
    )
    function = Function(settings)
    function.start()
    await until_ready(function)
    async with asgi_client(function) as http:
        response = await http.post(path, content=body, headers=headers)
        assert response.status_code == status, response.text
        assert (
            response.json().get("error", response.json().get("data", {}).get("error"))["code"]
            == code
        )
        assert (await http.get("/health/readiness")).status_code == 200
        metrics = (await http.get("/metrics")).text
        assert f'surge_jobs_total{{code="{code}",function="nsfw",status="error"}}' in metrics
    await function.drain()


async def test_trace_runs_from_submit_through_the_worker(
    nsfw_function: Function, client: SurgeClient, photos: dict[str, Path]
) -> None:
    _EXPORTER.clear()
    inbox = await client.inbox()
    job_id = await client.submit(
        photos["astronaut"].read_bytes(), function="nsfw", reply_to=inbox.subject
    )
    result = (await inbox.wait([job_id], timeout=30))[job_id]
    await asyncio.sleep(0.2)
    spans = {s.name: s for s in _EXPORTER.get_finished_spans()}
    submit, job = spans["surge.submit"], spans["surge.job"]
    assert job.parent is not None and job.parent.span_id == submit.context.span_id
    assert result.trace_id == format(submit.context.trace_id, "032x")
    for child in ("decode", "batch wait", "inference", "publish"):
        span = spans[child]
        assert span.parent is not None and span.parent.span_id == job.context.span_id, child
        assert span.context.trace_id == submit.context.trace_id


async def test_json_log_lines_carry_job_and_trace_ids(
    nsfw_function: Function, client: SurgeClient
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("surge")
    logger.addHandler(handler)
    try:
        inbox = await client.inbox()
        job_id = await client.submit(gif_bytes(), function="nsfw", reply_to=inbox.subject)
        result = (await inbox.wait([job_id], timeout=30))[job_id]
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line["job_id"] == job_id]
    assert mine, lines
    for line in mine:
        assert line["trace_id"] == result.trace_id
        assert line["function"] == "nsfw" and line["model_version"] == result.model.version  # type: ignore[union-attr]
