"""Two tenants on one NATS server: what the server refuses, and what the worker refuses.

A real nats-server whose users are a trusted worker and two tenants with the
permissions of `function.contract.tenancy`; a real `tiny` worker.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from prometheus_client import REGISTRY

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.parse import job_headers, tenant_blob_prefix
from function.contract.quota import TenantQuota
from function.contract.settings import (
    JOBS_STREAM,
    OBJECT_STORE_BUCKET,
    Header,
    Priority,
    consumer_name,
    job_subject,
    tenant_blob_bucket,
    tenant_inbox_prefix,
    tenant_stream,
)
from function.contract.wire import JobEnvelope, JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.telemetry import JsonFormatter
from function.transport.connect import open_nats
from function.transport.storage import fetch_result
from function.transport.tenants import add_tenant
from function.transport.topology import consumer_filters, job_filters
from tests.conftest import WorkerFactory
from tests.e2e.tenants.stack import A, B, auth
from tests.helpers import png_bytes

pytestmark = pytest.mark.nats


async def test_a_tenant_gets_its_result_scoped_to_it(tenant_a: SurgeClient) -> None:
    result = await tenant_a.call(png_bytes(), function="tiny", timeout=20)
    assert result.status is JobStatus.OK and result.tenant == A
    stored = await tenant_a.result(result.job_id)
    assert stored is not None and stored.tenant == A


async def test_two_tenants_may_use_the_same_job_id(
    tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """De-duplication ids carry the tenant: B's `order-1` is not A's `order-1`."""
    inbox_a, inbox_b = await tenant_a.inbox(), await tenant_b.inbox()
    await tenant_a.submit(png_bytes(), function="tiny", job_id="order-1", reply_to=inbox_a.subject)
    await tenant_b.submit(png_bytes(), function="tiny", job_id="order-1", reply_to=inbox_b.subject)
    got_a = (await inbox_a.wait(["order-1"], timeout=20))["order-1"]
    got_b = (await inbox_b.wait(["order-1"], timeout=20))["order-1"]
    assert (got_a.tenant, got_b.tenant) == (A, B)
    assert got_a.status is got_b.status is JobStatus.OK


async def _refused_publish(client: SurgeClient, subject: str) -> None:
    """The server drops the message (a permissions violation): no stream ever acks it."""
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await client.js.publish(subject, png_bytes(), timeout=1.5)


async def test_the_server_keeps_a_tenant_out_of_other_queues(tenant_a: SurgeClient) -> None:
    for subject in (
        job_subject(Priority.NORMAL, "tiny", B),  # another tenant's queue
        job_subject(Priority.NORMAL, "tiny"),  # the open queue
        "surge.results.tenant-b.order-1",  # a forged result
    ):
        await _refused_publish(tenant_a, subject)


async def test_the_server_keeps_a_tenant_out_of_other_results_and_replies(
    server: EmbeddedNats, tenant_b: SurgeClient
) -> None:
    b_result = await tenant_b.call(png_bytes(), function="tiny", timeout=20)
    errors: list[str] = []

    async def seen(exc: Exception) -> None:
        errors.append(str(exc))

    spy = await open_nats(server.url, auth(A), name="spy", error_cb=seen)
    try:
        heard: list[Msg] = []

        async def keep(msg: Msg) -> None:
            heard.append(msg)

        for subject in ("surge.results.>", f"_INBOX_{B}.>", "_INBOX.>"):
            await spy.subscribe(subject, cb=keep)
        await spy.flush()
        await tenant_b.call(png_bytes(), function="tiny", timeout=20)
        await asyncio.sleep(0.3)
        assert heard == []
        assert sum("permissions violation" in e.lower() for e in errors) >= 3, errors
        stolen = await _direct_get(spy, b_result.job_id)
        assert stolen is None
    finally:
        await spy.close()


async def _direct_get(nc: NATS, job_id: str) -> object:
    """B's stored result as A would read it: refused, so nothing (or a timeout)."""
    try:
        return await fetch_result(nc.jetstream(timeout=1.5), job_id, B)
    except TimeoutError:
        return None


async def test_the_worker_replies_to_a_tenant_only_under_its_own_inbox(
    tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """The confused deputy: A names B's inbox as its reply subject."""
    inbox_b = await tenant_b.inbox()
    job = await tenant_a.submit(png_bytes(), function="tiny", reply_to=inbox_b.subject)
    assert await inbox_b.wait([job], timeout=2) == {}
    stored = None
    for _ in range(100):
        stored = await tenant_a.result(job)
        if stored is not None:
            break
        await asyncio.sleep(0.1)
    assert stored is not None and stored.error is not None
    assert stored.error.code is ErrorCode.BAD_ENVELOPE and "inbox" in stored.error.message


async def test_a_tenant_job_may_not_name_another_tenants_blob(tenant_a: SurgeClient) -> None:
    inbox = await tenant_a.inbox()
    envelope = b'{"image_ref": "tenants/tenant-b/inputs/x", "content_type": "image/png"}'
    headers = {
        Header.MSG_ID: f"{A}:blob-1",
        Header.CONTENT_TYPE: "application/json",
        Header.REPLY_TO: inbox.subject,
    }
    await tenant_a.js.publish(job_subject(Priority.NORMAL, "tiny", A), envelope, headers=headers)
    result = (await inbox.wait(["blob-1"], timeout=20))["blob-1"]
    assert result.error is not None and result.error.code is ErrorCode.BAD_ENVELOPE
    assert "outside tenant tenant-a" in result.error.message


OPEN_SUBJECTS = [job_subject(p, "*") for p in Priority]


@pytest.mark.parametrize(
    ("stream_subjects", "widened"),
    [(OPEN_SUBJECTS, False), (OPEN_SUBJECTS + [f"{s}.*" for s in OPEN_SUBJECTS], True)],
    ids=["before-tenants", "tenants-in-the-shared-stream"],
)
async def test_an_earlier_versions_queue_is_upgraded_in_place(
    client: SurgeClient,
    start_worker: WorkerFactory,
    stream_subjects: list[str],
    widened: bool,
) -> None:
    """Streams and consumers of earlier versions keep their jobs; tenants' jobs then go
    to the tenants' own streams."""
    js = client.js
    await js.add_stream(
        StreamConfig(
            name=JOBS_STREAM,
            subjects=stream_subjects,
            retention=RetentionPolicy.WORK_QUEUE,
            max_age=7 * 24 * 3600.0,
            duplicate_window=120.0,
        )
    )
    for priority in Priority:
        name = consumer_name("tiny", priority)
        subject = job_subject(priority, "tiny")
        old = ConsumerConfig(
            durable_name=name,
            name=name,
            filter_subject=None if widened else subject,
            filter_subjects=[subject, f"{subject}.*"] if widened else None,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=10.0,
            max_deliver=5,
            max_ack_pending=256,
        )
        await js.add_consumer(JOBS_STREAM, config=old)
    inbox = await client.inbox()
    queued = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    worker = await start_worker(function="tiny", warmup_batch_sizes=[])
    info = await js.consumer_info(JOBS_STREAM, consumer_name("tiny", Priority.NORMAL))
    assert consumer_filters(info.config) == job_filters("tiny", Priority.NORMAL)
    assert (await js.stream_info(JOBS_STREAM)).config.subjects == OPEN_SUBJECTS
    await add_tenant(js, A, TenantQuota(), worker.settings)
    assert worker.topology_watch is not None
    await worker.topology_watch.check()
    tenant_inbox = f"{tenant_inbox_prefix(A)}.upgrade"
    answers: list[Msg] = []

    async def keep(msg: Msg) -> None:
        answers.append(msg)

    await client.nc.subscribe(tenant_inbox, cb=keep)
    headers = job_headers("t-1", content_type="image/png", reply_to=tenant_inbox, tenant=A)
    ack = await js.publish(job_subject(Priority.NORMAL, "tiny", A), png_bytes(), headers=headers)
    assert ack.stream == tenant_stream(A)
    assert (await inbox.wait([queued], timeout=20))[queued].status is JobStatus.OK
    for _ in range(200):
        if answers:
            break
        await asyncio.sleep(0.05)
    tenant_result = Result.model_validate_json(answers[0].data)
    assert (tenant_result.job_id, tenant_result.tenant) == ("t-1", A)
    assert tenant_result.status is JobStatus.OK


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_jobs_and_model_seconds_are_counted_per_tenant(
    tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """Tenants named in SURGE_TENANTS by id, any other as `other`: bounded labels."""
    jobs = "surge_tenant_jobs_total"
    seconds = "surge_tenant_compute_seconds_total"
    a_ok = {"function": "tiny", "tenant": A, "status": "ok"}
    other_ok = {**a_ok, "tenant": "other"}
    before = (_sample(jobs, a_ok), _sample(jobs, other_ok))
    a_seconds = _sample(seconds, {"function": "tiny", "tenant": A})
    for _ in range(3):
        await tenant_a.call(png_bytes(), function="tiny", timeout=20)
    await tenant_b.call(png_bytes(), function="tiny", timeout=20)
    assert _sample(jobs, a_ok) - before[0] == 3
    assert _sample(jobs, other_ok) - before[1] == 1  # tenant-b is not in SURGE_TENANTS
    assert _sample(seconds, {"function": "tiny", "tenant": A}) > a_seconds
    assert _sample(jobs, {**a_ok, "tenant": B}) == 0


async def test_a_tenants_job_log_lines_carry_the_tenant(tenant_a: SurgeClient) -> None:
    """The queue path's log lines name the job, its trace and its tenant."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("surge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = await tenant_a.call(b"not an image", function="tiny", timeout=20)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    failed = [r for r in records if r["msg"].startswith("job failed")]
    assert result.status is JobStatus.ERROR and failed
    assert (failed[0]["job_id"], failed[0]["tenant"]) == (result.job_id, A)


async def test_a_tenant_uploads_to_its_own_bucket_and_no_other(
    server: EmbeddedNats, tenant_a: SurgeClient, tenant_b: SurgeClient
) -> None:
    """A large input goes by A's own bucket; B's bucket, and the shared one, are closed to A;
    a job naming a name from another bucket finds nothing in A's."""
    ref = f"{tenant_blob_prefix(A)}inputs/big-1"
    await (await tenant_a._blobs()).put(ref, png_bytes(64, 64))
    await (await tenant_b._blobs()).put(f"{tenant_blob_prefix(A)}inputs/planted", png_bytes())
    inbox = await tenant_a.inbox()
    for job_id, name in (("big-1", ref), ("planted", f"{tenant_blob_prefix(A)}inputs/planted")):
        envelope = JobEnvelope(image_ref=name, content_type="image/png")
        headers = job_headers(job_id, content_type="application/json", reply_to=inbox.subject)
        subject = job_subject(Priority.NORMAL, "tiny", A)
        await tenant_a.js.publish(subject, envelope.model_dump_json().encode(), headers=headers)
    got = await inbox.wait(["big-1", "planted"], timeout=20)
    assert got["big-1"].status is JobStatus.OK
    assert got["planted"].error is not None
    assert got["planted"].error.code is ErrorCode.INPUT_NOT_FOUND  # not in A's bucket
    spy = await open_nats(server.url, auth(A), name="spy", inbox_prefix=tenant_inbox_prefix(A))
    try:
        for bucket in (tenant_blob_bucket(B), OBJECT_STORE_BUCKET):
            with pytest.raises((nats.errors.TimeoutError, nats.js.errors.Error)):
                await spy.jetstream(timeout=1.5).object_store(bucket)
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await spy.jetstream(timeout=1.5).publish(f"$O.{bucket}.M.x", b"{}", timeout=1.5)
    finally:
        await spy.close()
