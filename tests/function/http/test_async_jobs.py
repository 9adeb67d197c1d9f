"""`POST /v1/jobs/{function}` and signed webhooks, end to end: the real app over a real
`tiny` worker and nats-server; webhook receivers are real HTTP servers on loopback ports
(allowed by `SURGE_WEBHOOK_ALLOW_HOSTS=127.0.0.1`)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobState, JobView
from function.contract.quota import TenantQuota
from function.contract.settings import (
    JOBS_STREAM,
    RESULTS_STREAM,
    result_subject,
    tenant_stream,
)
from function.contract.webhooks import (
    BadSignature,
    WebhookState,
    tenant_secret,
    verify,
)
from function.contract.wire import JobStatus, Result
from function.http.func import Function
from function.http.submit import NO_SECRET
from function.local.nats_server import EmbeddedNats
from function.transport.tenants import add_tenant
from tests.examples.test_webhook_receiver import _load as load_example_receiver
from tests.helpers import asgi_client, png_bytes, tiny_settings, until_ready

pytestmark = pytest.mark.timeout(120)

MASTER = "master-secret-for-tests"
ACME_KEY = "acme-key-0123456789abcdef0123456789"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 answering `statuses` in turn (then the last one
    again), keeping every request it gets."""

    statuses: list[int]
    got: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.got.append(Received(headers, body))
                status = owner.statuses[min(len(owner.got), len(owner.statuses)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.__exit__()


def receiver(started: list[Receiver], *statuses: int) -> Receiver:
    made = Receiver(list(statuses)).__enter__()
    started.append(made)
    return made


def webhook_env(monkeypatch: pytest.MonkeyPatch, *, secret: bool = True) -> None:
    if secret:
        monkeypatch.setenv("SURGE_WEBHOOK_SECRET", MASTER)
    monkeypatch.setenv("SURGE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("SURGE_WEBHOOK_BACKOFF_S", "0.05")
    monkeypatch.setenv("SURGE_WEBHOOK_ATTEMPTS", "3")
    monkeypatch.setenv("SURGE_WEBHOOK_TIMEOUT_S", "5")


@pytest.fixture
async def tiny(
    nats_server: EmbeddedNats, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Function]:
    webhook_env(monkeypatch)
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    await until_ready(function)
    yield function
    await function.drain()


def _accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "queued"
    assert body["status_url"] == f"/v1/jobs/{body['job_id']}"
    assert response.headers["location"] == body["status_url"]
    return str(body["job_id"])


async def _settled(
    http: httpx.AsyncClient, job_id: str, headers: dict[str, str] | None = None
) -> JobView:
    """The job's view once its webhook is delivered or failed."""
    deadline = time.monotonic() + 30
    while True:
        view = JobView.model_validate(
            (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        )
        if view.webhook is not None and view.webhook.state is not WebhookState.PENDING:
            return view
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)


def _signed(got: Received, tenant: str | None) -> None:
    secret = tenant_secret(MASTER.encode(), tenant)
    verify(secret, got.headers["surge-signature"], got.body, now=time.time())


async def test_a_job_is_taken_at_once_and_its_webhook_gets_the_signed_result(
    tiny: Function, client: SurgeClient, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers, 200)
    async with asgi_client(tiny) as http:
        job_id = _accepted(
            await http.post(f"/v1/jobs/tiny?webhook={hook.url}&priority=high", content=png_bytes())
        )
        view = await _settled(http, job_id)
    assert view.state is JobState.DONE and view.result is not None
    assert view.webhook is not None
    assert (view.webhook.state, view.webhook.attempts) == (WebhookState.DELIVERED, 1)
    assert (view.webhook.last_status, view.webhook.url) == (200, hook.url)
    [got] = hook.got
    _signed(got, None)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["surge-job-id"] == job_id
    assert got.headers["surge-attempt"] == "1"
    stored = await client.js.get_last_msg(RESULTS_STREAM, result_subject(job_id), direct=True)
    assert got.body == stored.data  # the exact bytes stored
    assert Result.model_validate_json(got.body).status is JobStatus.OK
    with pytest.raises(BadSignature):  # another tenant's secret does not verify it
        verify(
            tenant_secret(MASTER.encode(), "acme"),
            got.headers["surge-signature"],
            got.body,
            now=time.time(),
        )


async def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(
    tiny: Function, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers, 500, 502, 200)
    async with asgi_client(tiny) as http:
        job_id = _accepted(
            await http.post(
                "/v1/jobs/tiny", content=png_bytes(), headers={"Surge-Webhook": hook.url}
            )
        )
        view = await _settled(http, job_id)
    assert view.webhook is not None
    assert (view.webhook.state, view.webhook.attempts) == (WebhookState.DELIVERED, 3)
    assert view.webhook.last_status == 200 and view.webhook.last_error == ""
    assert [got.headers["surge-attempt"] for got in hook.got] == ["1", "2", "3"]
    assert len({got.headers["surge-delivery"] for got in hook.got}) == 1
    assert len({got.body for got in hook.got}) == 1
    for got in hook.got:
        _signed(got, None)


async def test_a_receiver_that_always_fails_is_recorded_failed(
    tiny: Function, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers, 503)
    async with asgi_client(tiny) as http:
        job_id = _accepted(
            await http.post(f"/v1/jobs/tiny?webhook={hook.url}", content=png_bytes())
        )
        view = await _settled(http, job_id)
    assert view.state is JobState.DONE  # the job is done; only its webhook failed
    assert view.webhook is not None
    assert (view.webhook.state, view.webhook.attempts) == (WebhookState.FAILED, 3)
    assert (view.webhook.last_status, view.webhook.last_error) == (503, "answered HTTP 503")
    assert len(hook.got) == 3  # SURGE_WEBHOOK_ATTEMPTS


async def test_a_failed_job_sends_its_error_result_too(
    tiny: Function, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers, 200)
    async with asgi_client(tiny) as http:
        job_id = _accepted(
            await http.post(
                f"/v1/jobs/tiny?webhook={hook.url}",
                content=b"GIF89a not really",
                headers={"content-type": "image/gif"},
            )
        )
        view = await _settled(http, job_id)
    assert view.state is JobState.FAILED
    [got] = hook.got
    _signed(got, None)
    result = Result.model_validate_json(got.body)
    assert result.status is JobStatus.ERROR and result.error is not None


@pytest.mark.parametrize(
    ("query", "status", "code", "says"),
    [
        ("/v1/jobs/tiny?webhook=ftp://127.0.0.1/x", 422, "bad_envelope", "http:// or https://"),
        ("/v1/jobs/tiny?webhook=http://u:p@127.0.0.1/x", 422, "bad_envelope", "user name"),
        ("/v1/jobs/tiny?webhook=http://10.0.0.1/x", 422, "bad_envelope", "ALLOW_HOSTS"),
        ("/v1/jobs/tiny?webhook=http://127.0.0.1/" + "a" * 2100, 422, "bad_envelope", "2048"),
        ("/v1/jobs/nsfw", 404, "unknown_function", "serves 'tiny'"),
        ("/v1/jobs/tiny?priority=urgent", 422, None, ""),
    ],
)
async def test_bad_submissions_are_refused_and_nothing_is_queued(
    tiny: Function, client: SurgeClient, query: str, status: int, code: str | None, says: str
) -> None:
    async with asgi_client(tiny) as http:
        response = await http.post(query, content=png_bytes())
    assert response.status_code == status, response.text
    if code is not None:
        error = response.json()["error"]
        assert error["code"] == code and says in error["message"]
    assert (await client.js.stream_info(JOBS_STREAM)).state.last_seq == 0


async def test_a_bad_job_id_or_body_is_refused(tiny: Function, client: SurgeClient) -> None:
    async with asgi_client(tiny) as http:
        bad_id = await http.post(
            "/v1/jobs/tiny", content=png_bytes(), headers={"Surge-Job-Id": "a.b"}
        )
        bad_json = await http.post(
            "/v1/jobs/tiny", content=b'{"image": 5}', headers={"content-type": "application/json"}
        )
    assert bad_id.status_code == 400 and bad_id.json()["error"]["code"] == "bad_envelope"
    assert bad_json.status_code == 422 and bad_json.json()["error"]["code"] == "bad_envelope"
    assert (await client.js.stream_info(JOBS_STREAM)).state.last_seq == 0


async def test_a_bad_webhook_in_a_job_message_gets_an_error_result(
    tiny: Function, client: SurgeClient
) -> None:
    inbox = await client.inbox()
    job_id = await client.submit(
        png_bytes(), function="tiny", reply_to=inbox.subject, webhook="http://10.1.2.3/hook"
    )
    [result] = (await inbox.wait([job_id], timeout=30)).values()
    assert result.error is not None and result.error.code is ErrorCode.BAD_ENVELOPE
    assert result.error.message.startswith("Surge-Webhook: ")


async def test_without_a_secret_webhooks_are_refused_and_jobs_still_run(
    nats_server: EmbeddedNats,
    model_dir: Path,
    client: SurgeClient,
    monkeypatch: pytest.MonkeyPatch,
    receivers: list[Receiver],
) -> None:
    webhook_env(monkeypatch, secret=False)
    monkeypatch.delenv("SURGE_WEBHOOK_SECRET", raising=False)
    hook = receiver(receivers, 200)
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    try:
        await until_ready(function)
        async with asgi_client(function) as http:
            refused = await http.post(f"/v1/jobs/tiny?webhook={hook.url}", content=png_bytes())
            job_id = _accepted(await http.post("/v1/jobs/tiny", content=png_bytes()))
        inbox = await client.inbox()
        sent = await client.submit(
            png_bytes(), function="tiny", reply_to=inbox.subject, webhook=hook.url
        )
        [result] = (await inbox.wait([sent], timeout=30)).values()
        done = await client.result(job_id)
        for _ in range(600):
            if done is not None:
                break
            await asyncio.sleep(0.05)
            done = await client.result(job_id)
    finally:
        await function.drain()
    assert refused.status_code == 422
    assert refused.json()["error"] == {"code": "bad_envelope", "message": NO_SECRET}
    assert result.error is not None and "SURGE_WEBHOOK_SECRET" in result.error.message
    assert done is not None and done.status is JobStatus.OK
    assert hook.got == []


def _noise_png(side: int) -> bytes:
    pixels = random.Random(7).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_tenants_async_job_lands_on_its_own_stream(
    nats_server: EmbeddedNats,
    model_dir: Path,
    client: SurgeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """acme's job goes to its stream (its quota holds: 429 past it), is followed with its
    token only, and its webhook is signed with acme's secret, which the example receiver
    checks."""
    webhook_env(monkeypatch)
    key_hash = hashlib.sha256(ACME_KEY.encode()).hexdigest()
    tenants = {"tenants": {"acme": {"functions": ["tiny"], "api_keys_sha256": [key_hash]}}}
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    monkeypatch.setenv("SURGE_HTTP_AUTH_KEYS_FILE", str(tmp_path / "tenants.json"))
    taken: list[dict[str, object]] = []
    secret = tenant_secret(MASTER.encode(), "acme")
    example = load_example_receiver().make_server("127.0.0.1", 0, secret, taken.append)
    threading.Thread(target=example.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{example.server_address[1]}/"
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    acme = {"authorization": f"Bearer {ACME_KEY}"}
    try:
        await until_ready(function)
        assert function.worker is not None and function.worker.topology_watch is not None
        await add_tenant(client.js, "acme", TenantQuota(max_payload=4096), function.settings)
        await function.worker.topology_watch.follow_tenants()
        async with asgi_client(function) as http:
            anonymous = await http.post(f"/v1/jobs/tiny?webhook={url}", content=png_bytes())
            job_id = _accepted(
                await http.post(f"/v1/jobs/tiny?webhook={url}", content=png_bytes(), headers=acme)
            )
            over = await http.post("/v1/jobs/tiny", content=_noise_png(64), headers=acme)
            view = await _settled(http, job_id, acme)
            open_view = await http.get(f"/v1/jobs/{job_id}")
    finally:
        await function.drain()
        example.shutdown()
        example.server_close()
    assert anonymous.status_code == 401
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "quota_exceeded"
    assert (await client.js.stream_info(tenant_stream("acme"))).state.last_seq == 1
    assert (await client.js.stream_info(JOBS_STREAM)).state.last_seq == 0
    assert view.tenant == "acme" and view.state is JobState.DONE
    assert view.webhook is not None and view.webhook.state is WebhookState.DELIVERED
    assert [r["job_id"] for r in taken] == [job_id]
    assert taken[0]["tenant"] == "acme"
    assert open_view.status_code == 401
