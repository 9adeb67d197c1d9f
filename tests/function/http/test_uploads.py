"""`/v1/infer` the way curl users call it, over real HTTP (ASGI) against real workers and
a real nats-server: raw bodies with any content type, multipart uploads, `Accept:
image/png`, and the OpenAPI schema that lets `/docs` send an image."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from function.contract.errors import ErrorCode
from function.contract.settings import WorkerSettings
from function.contract.wire import ImageOutput, JobStatus, Result, ScoresOutput
from function.http.func import Function
from function.http.openapi import HTTP_STATUS, NOT_ACCEPTABLE
from function.local.nats_server import EmbeddedNats
from tests.helpers import asgi_client, png_bytes, tiny_settings, until_ready

FORM = "application/x-www-form-urlencoded"  # what `curl --data-binary @photo.jpg` sends
LIMIT = 64 * 1024


def _jpeg(image: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(image)).convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
async def tiny(nats_server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Function]:
    settings = tiny_settings(nats_server.url, model_dir).model_copy(
        update={"max_payload_bytes": LIMIT}
    )
    function = Function(settings)
    function.start()
    await until_ready(function)
    yield function
    await function.drain()


def _mean(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    scores = Result.model_validate(response.json()).outputs["scores"]
    assert isinstance(scores, ScoresOutput)
    return scores.scores["mean"]


async def test_curl_bodies_and_uploads_are_taken_by_their_bytes(tiny: Function) -> None:
    red, blue = png_bytes(color=(200, 30, 30)), png_bytes(color=(20, 40, 220))
    async with asgi_client(tiny) as http:
        raw = await http.post("/v1/infer/tiny", content=red, headers={"content-type": "image/png"})
        form = await http.post("/v1/infer/tiny", content=red, headers={"content-type": FORM})
        octets = await http.post(
            "/v1/infer/tiny", content=red, headers={"content-type": "application/octet-stream"}
        )
        bare = await http.post("/v1/infer/tiny", content=red)
        upload = await http.post("/v1/infer/tiny", files={"image": ("red.png", red, "image/png")})
        any_name = await http.post(
            "/v1/infer/tiny",
            files={"photo": ("blue.bin", blue, "application/octet-stream")},
            data={"note": "ignored"},
        )
        jpeg = await http.post(
            "/v1/infer/tiny", files={"image": ("red.jpg", _jpeg(red), "image/jpeg")}
        )
    want = _mean(raw)
    for response in (form, octets, bare, upload):
        assert _mean(response) == pytest.approx(want, abs=1e-6)
    assert _mean(any_name) != pytest.approx(want, abs=1e-3)  # the blue one, not a default
    assert _mean(jpeg) == pytest.approx(want, abs=0.02)


async def test_bad_uploads_get_clear_errors_and_the_worker_stays_ready(
    tiny: Function, caplog: pytest.LogCaptureFixture
) -> None:
    image = png_bytes()
    two_files = {"a": ("a.png", image, "image/png"), "b": ("b.png", image, "image/png")}
    async with asgi_client(tiny) as http:
        both = await http.post("/v1/infer/tiny", files=two_files)
        no_boundary = await http.post(
            "/v1/infer/tiny", content=image, headers={"content-type": "multipart/form-data"}
        )
        too_big = await http.post(
            "/v1/infer/tiny", files={"image": ("big.png", image + bytes(LIMIT), "image/png")}
        )
        garbage = await http.post(
            "/v1/infer/tiny", content=b"\x00garbage", headers={"content-type": FORM}
        )
        assert (await http.get("/health/readiness")).status_code == 200
    for response, status, code, words in (
        (both, 400, "bad_image", "malformed multipart body: more than one file"),
        (no_boundary, 400, "bad_image", "malformed multipart body: no boundary"),
        (too_big, 413, "payload_too_large", "limit 65536"),
        (garbage, 400, "bad_image", "not a PNG, JPEG or WebP image"),
    ):
        assert response.status_code == status, response.text
        error = Result.model_validate(response.json()).error
        assert error is not None and error.code.value == code and words in error.message
    assert not [r for r in caplog.records if r.exc_info], "a bad upload logged a traceback"


def _fuzzed(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        choice = rng.randrange(4)
        if choice == 0:
            del data[at:]
        elif choice == 1:
            data[at:at] = rng.choice([b"\r\n", b"--fuzz", b"--fuzz--\r\n", b"\r\n\r\n"])
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


async def test_fuzzed_requests_get_a_result_never_a_crash(
    tiny: Function, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(13)
    upload = httpx.Request(
        "POST",
        "http://surge/",
        files={"image": ("a.png", png_bytes(), "image/png")},
        headers={"content-type": "multipart/form-data; boundary=fuzz"},
    )
    seeds = [(upload.read(), "multipart/form-data; boundary=fuzz"), (png_bytes(), FORM)]
    content_types = ["multipart/form-data; boundary=fuzz", FORM, "image/png", "", "text/plain"]
    allowed = {200, *HTTP_STATUS.values()} - {401, 403, 404, 429, 500, 503, 504}
    seen: set[int] = set()
    async with asgi_client(tiny) as http:
        for _ in range(120):
            body, content_type = rng.choice(seeds)
            body = _fuzzed(rng, body) if rng.random() < 0.85 else body
            content_type = rng.choice(content_types) if rng.random() < 0.2 else content_type
            headers = {"content-type": content_type} if content_type else {}
            response = await http.post("/v1/infer/tiny", content=body, headers=headers)
            assert response.status_code in allowed, response.text
            result = Result.model_validate(response.json())
            if response.status_code != 200:
                assert result.error is not None
                assert HTTP_STATUS[result.error.code] == response.status_code
            seen.add(response.status_code)
        assert (await http.get("/health/readiness")).status_code == 200
    assert {200, 400} <= seen, seen
    assert not [r for r in caplog.records if r.exc_info], "a fuzzed request logged a traceback"


async def test_a_function_without_an_image_output_answers_406(tiny: Function) -> None:
    image = png_bytes()
    async with asgi_client(tiny) as http:
        refused = await http.post("/v1/infer/tiny", content=image, headers={"accept": "image/png"})
        wildcard = await http.post("/v1/infer/tiny", content=image, headers={"accept": "image/*"})
        curl = await http.post("/v1/infer/tiny", content=image, headers={"accept": "*/*"})
    for response in (refused, wildcard):
        assert response.status_code == NOT_ACCEPTABLE
        assert response.headers["content-type"] == "application/json"
        assert response.headers["vary"] == "Accept"
        result = Result.model_validate(response.json())
        assert result.status is JobStatus.ERROR and result.error is not None
        assert result.error.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
        assert result.error.message.startswith("tiny has no image output to send as image/png")
        assert "ask for application/json" in result.error.message
    assert curl.status_code == 200 and curl.headers["content-type"] == "application/json"


def _pixels(data: bytes) -> tuple[str, np.ndarray]:
    image = Image.open(io.BytesIO(data))
    return image.mode, np.asarray(image, dtype=np.float32)


async def test_accept_image_png_returns_the_cutout_or_the_mask_itself(
    nats_server: EmbeddedNats, model_dir: Path, photos: dict[str, Path]
) -> None:
    function = Function(
        WorkerSettings(
            nats_url=nats_server.url,
            function="remove-bg",
            model_dir=model_dir,
            warmup_batch_sizes=[],
        )
    )
    function.start()
    await until_ready(function)
    photo = photos["astronaut"].read_bytes()
    png = {"accept": "image/png"}
    try:
        async with asgi_client(function) as http:
            cutout = await http.post("/v1/infer/remove-bg", content=photo, headers=png)
            mask = await http.post(
                "/v1/infer/remove-bg",
                params={"output": "mask"},
                files={"image": ("astronaut.jpg", _jpeg(photo), "image/jpeg")},
                headers=png,
            )
            as_json = await http.post(
                "/v1/infer/remove-bg", content=photo, params={"output": "mask"}
            )
            unknown = await http.post(
                "/v1/infer/remove-bg", content=photo, params={"output": "halo"}, headers=png
            )
    finally:
        await function.drain()
    assert cutout.status_code == 200 and cutout.headers["content-type"] == "image/png"
    assert cutout.headers["surge-output"] == "cutout" and cutout.headers["surge-job-id"]
    mode, rgba = _pixels(cutout.content)
    assert mode == "RGBA" and rgba.shape == (512, 512, 4)
    assert rgba[256, 256, 3] > 0.5 * 255 and rgba[:64, :64, 3].mean() < 0.1 * 255
    assert mask.status_code == 200 and mask.headers["surge-output"] == "mask"
    mode, alpha = _pixels(mask.content)
    assert mode == "L" and alpha[256, 256] > 0.5 * 255 and alpha[:64, :64].mean() < 0.1 * 255
    assert as_json.headers["content-type"] == "application/json"
    inline = Result.model_validate(as_json.json()).outputs["mask"]
    assert isinstance(inline, ImageOutput) and inline.data is not None
    assert np.abs(_pixels(base64.b64decode(inline.data))[1] - alpha).mean() < 2  # JPEG'd input
    assert unknown.status_code == 422
    assert "unknown output 'halo'" in unknown.json()["error"]["message"]


async def test_the_openapi_schema_describes_bodies_and_every_error(tmp_path: Path) -> None:
    function = Function(
        WorkerSettings(nats_url="nats://127.0.0.1:1", function="remove-bg", model_dir=tmp_path)
    )
    async with asgi_client(function) as http:
        schema = (await http.get("/openapi.json")).json()
        docs = await http.get("/docs")
    assert docs.status_code == 200
    operation = schema["paths"]["/v1/infer/{function}"]["post"]
    content = operation["requestBody"]["content"]
    for media in ("image/png", "image/jpeg", "image/webp", "application/octet-stream"):
        assert content[media]["schema"]["contentMediaType"] == media
    upload = content["multipart/form-data"]["schema"]
    assert upload["required"] == ["image"] and "contentMediaType" in upload["properties"]["image"]
    assert {"image", "image_ref"} <= set(content["application/json"]["schema"]["properties"])
    assert "output" in {p["name"] for p in operation["parameters"]}
    responses = operation["responses"]
    assert set(responses["200"]["content"]) == {"application/json", "image/png"}
    statuses = {str(s) for s in HTTP_STATUS.values()} | {str(NOT_ACCEPTABLE)}
    assert statuses == set(responses) - {"200"}
    for status in statuses:
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/Result", status
    assert "`too_many_pixels`" in responses["413"]["description"]
    cloudevents = schema["paths"]["/"]["post"]["responses"]
    assert {str(s) for s in HTTP_STATUS.values()} <= set(cloudevents)


async def test_uploads_and_image_answers_pass_through_auth(
    nats_server: EmbeddedNats, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multipart upload is refused before its body is read; authenticated, it and a raw
    curl body get the tenant's result; `Accept: image/png` is judged after auth."""
    key = "acme-key-0123456789abcdef0123456789"
    digest = hashlib.sha256(key.encode()).hexdigest()
    tenants = {"tenants": {"acme": {"functions": ["tiny"], "api_keys_sha256": [digest]}}}
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    monkeypatch.setenv("SURGE_HTTP_AUTH_KEYS_FILE", str(tmp_path / "tenants.json"))
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    await until_ready(function)
    upload = {"image": ("photo.png", png_bytes(), "image/png")}
    bearer = {"authorization": f"Bearer {key}"}
    try:
        async with asgi_client(function) as http:
            anonymous = await http.post("/v1/infer/tiny", files=upload)
            by_key = await http.post("/v1/infer/tiny", files=upload, headers=bearer)
            raw = await http.post(
                "/v1/infer/tiny", content=png_bytes(), headers={"content-type": FORM, **bearer}
            )
            image = await http.post(
                "/v1/infer/tiny", files=upload, headers={"accept": "image/png", **bearer}
            )
    finally:
        await function.drain()
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"]
    for response in (by_key, raw):
        assert response.status_code == 200, response.text
        assert Result.model_validate(response.json()).tenant == "acme"
    assert image.status_code == NOT_ACCEPTABLE and image.json()["tenant"] == "acme"


def test_every_error_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert HTTP_STATUS[ErrorCode.QUOTA_EXCEEDED] == 429


def test_python_multipart_warnings_stay_out_of_the_logs() -> None:
    assert not logging.getLogger("python_multipart.multipart").isEnabledFor(logging.WARNING)
