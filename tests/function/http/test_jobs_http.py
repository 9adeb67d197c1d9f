"""`GET` and `DELETE /v1/jobs/{job_id}` on the real app, over a real worker and nats-server.

The app's worker serves `tiny`: an `nsfw` job stays queued (no worker takes it), a `tiny`
job is answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.lifecycle import JobState, JobView
from function.contract.wire import JobStatus
from function.http.func import Function
from function.local.nats_server import EmbeddedNats
from function.transport.lifecycle import JobLifecycle
from tests.helpers import asgi_client, png_bytes, tiny_settings, until_ready

pytestmark = pytest.mark.timeout(120)

ACME_KEY = "acme-key-0123456789abcdef0123456789"
BAD_IDS = ("a.b", "*", ">", "x" * 300, "a b", "surge.results.>")


@pytest.fixture
async def tiny(nats_server: EmbeddedNats, model_dir: Path) -> AsyncIterator[Function]:
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    await until_ready(function)
    yield function
    await function.drain()


def _view(response: httpx.Response, status: int) -> JobView:
    assert response.status_code == status, response.text
    return JobView.model_validate(response.json())


async def test_a_queued_job_is_followed_and_cancelled(tiny: Function, client: SurgeClient) -> None:
    job_id = await client.submit(png_bytes(), function="nsfw")
    async with asgi_client(tiny) as http:
        queued = _view(await http.get(f"/v1/jobs/{job_id}"), 200)
        cancelled = _view(await http.delete(f"/v1/jobs/{job_id}"), 200)
        again = _view(await http.delete(f"/v1/jobs/{job_id}"), 409)
        after = _view(await http.get(f"/v1/jobs/{job_id}"), 200)
    assert queued.state is JobState.QUEUED and queued.function == "nsfw"
    assert queued.result is None and queued.submitted_at is not None
    assert cancelled.state is JobState.CANCELLED
    assert "before any worker ran it" in cancelled.detail
    assert again.state is JobState.CANCELLED
    assert again.detail == "already cancelled: nothing to cancel"
    assert after.state is JobState.CANCELLED and after.result is not None
    assert after.result.error is not None and after.result.error.code is ErrorCode.CANCELLED


async def test_a_done_job_shows_its_result_and_cannot_be_cancelled(
    tiny: Function, client: SurgeClient
) -> None:
    inbox = await client.inbox()
    job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    await inbox.wait([job_id], timeout=30)
    async with asgi_client(tiny) as http:
        done = _view(await http.get(f"/v1/jobs/{job_id}"), 200)
        refused = _view(await http.delete(f"/v1/jobs/{job_id}"), 409)
        still = _view(await http.get(f"/v1/jobs/{job_id}"), 200)
    assert done.state is JobState.DONE and done.result is not None
    assert done.result.status is JobStatus.OK and "scores" in done.result.outputs
    assert refused.state is JobState.DONE
    assert refused.detail == "already done: nothing to cancel"
    assert still.state is JobState.DONE


async def test_bad_ids_are_refused_before_anything_is_sent(
    tiny: Function, client: SurgeClient
) -> None:
    """The record lookups reach NATS as direct gets: a bad id must send none (a wildcard
    there would read another job's record). A known-good lookup after them is the mark:
    the worker's connection is ordered, so anything sent before it is seen before it."""
    lookups = await client.nc.subscribe("$JS.API.DIRECT.GET.SURGE_RESULTS.>")
    await client.nc.flush()
    async with asgi_client(tiny) as http:
        for job_id in BAD_IDS:
            for method in ("GET", "DELETE"):
                response = await http.request(method, f"/v1/jobs/{job_id}")
                assert response.status_code == 400, (method, job_id, response.text)
                error = response.json()["error"]
                assert error["code"] == "bad_envelope"
                assert "one NATS subject token" in error["message"]
        unknown = _view(await http.get("/v1/jobs/never-submitted"), 404)
        gone = _view(await http.delete("/v1/jobs/never-submitted"), 404)
    assert unknown.state is JobState.UNKNOWN and gone.state is JobState.UNKNOWN
    assert "nothing to cancel" in gone.detail
    first = await lookups.next_msg(timeout=10)
    await lookups.unsubscribe()  # unread lookups would hold up the client's drain
    assert first.subject.endswith(".surge.results.never-submitted")


async def test_a_worker_not_connected_answers_503(
    tiny: Function, client: SurgeClient, tmp_path: Path
) -> None:
    job_id = await client.submit(png_bytes(), function="nsfw")
    never_started = Function(tiny_settings("nats://127.0.0.1:1", tmp_path))
    await tiny.drain()  # its connection is closed now
    for function in (never_started, tiny):
        async with asgi_client(function) as http:
            for method in ("GET", "DELETE"):
                response = await http.request(method, f"/v1/jobs/{job_id}")
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"]["code"] == "not_ready"
    queued = await JobLifecycle(client.nc).status(job_id)
    assert queued.state is JobState.QUEUED  # the DELETEs cancelled nothing


async def test_a_tenant_reads_only_its_own_records(
    nats_server: EmbeddedNats,
    model_dir: Path,
    client: SurgeClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An open job's id asked by tenant acme: no record of acme's, so 404, and the open
    job stays queued."""
    key_hash = hashlib.sha256(ACME_KEY.encode()).hexdigest()
    tenants = {"tenants": {"acme": {"functions": ["tiny"], "api_keys_sha256": [key_hash]}}}
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    monkeypatch.setenv("SURGE_HTTP_AUTH_KEYS_FILE", str(tmp_path / "tenants.json"))
    function = Function(tiny_settings(nats_server.url, model_dir))
    function.start()
    try:
        await until_ready(function)
        job_id = await client.submit(png_bytes(), function="nsfw")
        acme = {"authorization": f"Bearer {ACME_KEY}"}
        async with asgi_client(function) as http:
            anonymous = await http.get(f"/v1/jobs/{job_id}")
            read = _view(await http.get(f"/v1/jobs/{job_id}", headers=acme), 404)
            cancel = _view(await http.delete(f"/v1/jobs/{job_id}", headers=acme), 404)
    finally:
        await function.drain()
    assert anonymous.status_code == 401
    assert read.state is JobState.UNKNOWN and read.tenant == "acme"
    assert cancel.state is JobState.UNKNOWN
    assert (await JobLifecycle(client.nc).status(job_id)).state is JobState.QUEUED
