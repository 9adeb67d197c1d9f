"""The result cache against a real nats-server and real workers: hits answer without
inference, misses compute, entries expire with their results or are evicted, and a
tenant never gets another's result."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from function.client import SurgeClient
from function.contract.quota import TenantQuota
from function.contract.settings import RESULTS_STREAM, result_subject
from function.contract.wire import JobStatus, Result
from function.local.nats_server import EmbeddedNats
from function.transport.cache import CACHE_BUCKET, CacheEntry, ResultCache, cache_key
from function.transport.tenants import add_tenant
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.helpers import png_bytes

KV_STREAM = f"KV_{CACHE_BUCKET}"


def _inferences(worker: Worker) -> int:
    assert worker.consumer is not None
    return sum(worker.consumer.batch_sizes)


def _key(worker: Worker, data: bytes, outputs: tuple[str, ...], tenant: str | None = None) -> str:
    assert worker.model is not None
    return cache_key(tenant, worker.settings.function, worker.model.info.version, outputs, data)


async def _entry(js: JetStreamContext, key: str, job_id: str) -> CacheEntry:
    """The entry under `key` once it names `job_id` (written off the job's path)."""
    for _ in range(500):
        with contextlib.suppress(BucketNotFoundError, KeyNotFoundError):
            raw = await (await js.key_value(CACHE_BUCKET)).get(key)
            entry = CacheEntry.model_validate_json(raw.value or b"")
            if entry.job_id == job_id:
                return entry
        await asyncio.sleep(0.02)
    raise AssertionError(f"no cache entry for {job_id}")


async def _run(client: SurgeClient, data: bytes, **options: object) -> Result:
    inbox = await client.inbox()
    job_id = await client.submit(data, reply_to=inbox.subject, **options)  # type: ignore[arg-type]
    result = (await inbox.wait([job_id], timeout=60))[job_id]
    assert result.status is JobStatus.OK, result.error
    return result


async def test_same_input_twice_is_inferred_once(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(function="remove-bg", cache=True)
    image = png_bytes(48, 40)
    first = await _run(client, image, function="remove-bg", outputs=("mask",))
    await _entry(client.js, _key(worker, image, ("mask",)), first.job_id)
    again = await _run(client, image, function="remove-bg", outputs=("mask",))
    assert not first.timings.cache_hit and again.timings.cache_hit
    assert again.job_id != first.job_id and again.outputs == first.outputs
    assert again.timings.batch_size == 0 and again.model == first.model
    assert await client.result(again.job_id) == again  # stored on its own subject
    assert _inferences(worker) == 1
    other = await _run(client, image, function="remove-bg", outputs=("cutout",))
    assert not other.timings.cache_hit and set(other.outputs) == {"cutout"}
    assert _inferences(worker) == 2


async def test_cache_is_off_by_default(client: SurgeClient, start_worker: WorkerFactory) -> None:
    worker = await start_worker(function="tiny")
    image = png_bytes()
    await _run(client, image, function="tiny")
    again = await _run(client, image, function="tiny")
    assert not again.timings.cache_hit and _inferences(worker) == 2
    with pytest.raises(NotFoundError):
        await client.js.stream_info(KV_STREAM)


async def test_bounded_and_an_expired_result_is_recomputed(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(
        function="tiny", cache=True, cache_max_age_s=600, cache_max_bytes=64 * 1024
    )
    image = png_bytes(color=(1, 2, 3))
    key = _key(worker, image, ("scores",))
    first = await _run(client, image, function="tiny")
    await _entry(client.js, key, first.job_id)
    config = (await client.js.stream_info(KV_STREAM)).config
    assert (config.max_bytes, config.max_age) == (64 * 1024, 600)
    assert config.discard == DiscardPolicy.OLD and config.max_msgs_per_subject == 1
    await client.js.purge_stream(RESULTS_STREAM, subject=result_subject(first.job_id))
    again = await _run(client, image, function="tiny")
    assert not again.timings.cache_hit and _inferences(worker) == 2
    await _entry(client.js, key, again.job_id)  # the entry now names the new result
    third = await _run(client, image, function="tiny")
    assert third.timings.cache_hit and third.outputs == again.outputs
    assert _inferences(worker) == 2


async def test_oldest_entries_are_evicted_when_full(
    client: SurgeClient, start_worker: WorkerFactory
) -> None:
    worker = await start_worker(function="tiny", cache=True, cache_max_bytes=1024)
    images = [png_bytes(color=(i, 9, 9)) for i in range(8)]
    for image in images:
        result = await _run(client, image, function="tiny")
        await _entry(client.js, _key(worker, image, ("scores",)), result.job_id)
    state = (await client.js.stream_info(KV_STREAM)).state
    assert state.bytes <= 1024 and state.messages < len(images)
    again = await _run(client, images[0], function="tiny")  # evicted: computed again
    assert not again.timings.cache_hit and _inferences(worker) == len(images) + 1
    last = await _run(client, images[-1], function="tiny")
    assert last.timings.cache_hit


async def test_a_tenant_never_gets_another_tenants_result(
    client: SurgeClient, start_worker: WorkerFactory, nats_server: EmbeddedNats
) -> None:
    worker = await start_worker(function="tiny", cache=True)
    assert worker.topology_watch is not None and worker.model is not None
    await add_tenant(client.js, "acme", TenantQuota(), worker.settings)
    await worker.topology_watch.follow_tenants()
    image = png_bytes(color=(7, 7, 7))
    opened = await _run(client, image, function="tiny")
    await _entry(client.js, _key(worker, image, ("scores",)), opened.job_id)
    async with await SurgeClient.connect(nats_server.url, tenant="acme") as acme:
        theirs = await _run(acme, image, function="tiny")
        assert not theirs.timings.cache_hit and theirs.tenant == "acme"
        acme_key = _key(worker, image, ("scores",), "acme")
        await _entry(client.js, acme_key, theirs.job_id)
        hit = await _run(acme, image, function="tiny")
        assert hit.timings.cache_hit and hit.tenant == "acme"
    assert _inferences(worker) == 2
    # An entry under acme's key that names an open job is refused on read, not served.
    cache = ResultCache(client.js, worker.settings, worker.model.info.version)
    version = worker.model.info.version
    forged = CacheEntry(job_id=opened.job_id, tenant=None, function="tiny", model_version=version)
    kv = await client.js.key_value(CACHE_BUCKET)
    await kv.put(acme_key, forged.model_dump_json().encode())
    assert await cache.lookup(acme_key, "acme") is None
    assert await cache.lookup(_key(worker, image, ("scores",)), None) == await client.result(
        opened.job_id
    )
