"""`ModelStore` on a real nats-server: push and fetch by content hash, compare-and-set
under racing writers, and the watch every worker follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import ObjectNotFoundError

from function.contract.rollout import ModelRollout, PushedVersion, RolloutError
from function.local.nats_server import EmbeddedNats
from function.transport.modelstore import ModelStore, file_version


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


async def test_push_records_the_version_and_fetch_checks_it(nc: NATS, tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="no model has been pushed"):
        await ModelStore.open(nc.jetstream())
    store = await ModelStore.open(nc.jetstream(), create=True)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx, but bytes" * 1000)
    version = await store.push("tiny", model)
    assert version == file_version(model) and len(version) == 16
    assert await store.push("tiny", model) == version  # again: nothing new
    record, revision = await store.read("tiny")
    assert [v.version for v in record.versions] == [version] and revision > 0
    fetched = await store.fetch("tiny", version, tmp_path / "out" / f"{version}.onnx")
    assert fetched.read_bytes() == model.read_bytes()
    with pytest.raises(ObjectNotFoundError):
        await store.fetch("tiny", "0" * 16, tmp_path / "nothing.onnx")


async def test_racing_writers_lose_no_update(nc: NATS) -> None:
    store = await ModelStore.open(nc.jetstream(), create=True)

    def add(index: int) -> object:
        pushed = PushedVersion(version=f"{index:016x}", size=index)
        return lambda record: record.pushed(pushed)

    await asyncio.gather(*(store.change("tiny", add(i)) for i in range(12)))  # type: ignore[arg-type]
    record, _ = await store.read("tiny")
    assert sorted(v.size for v in record.versions) == list(range(12))


async def test_a_step_that_does_not_apply_writes_nothing(nc: NATS) -> None:
    store = await ModelStore.open(nc.jetstream(), create=True)
    with pytest.raises(RolloutError, match="no rollout in progress"):
        await store.change("tiny", lambda record: record.promoted())
    record, revision = await store.read("tiny")
    assert (record.versions, record.canary, revision) == ([], None, 0)


async def test_follow_sees_the_record_and_each_change(nc: NATS) -> None:
    store = await ModelStore.open(nc.jetstream(), create=True)
    await store.change("tiny", lambda r: r.pushed(PushedVersion(version="1" * 16, size=1)))
    seen: list[ModelRollout] = []

    async def follow() -> None:
        async for record in store.follow("tiny"):
            seen.append(record)
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await store.change("tiny", lambda r: r.canary_of("1" * 16, 0.25))
    await asyncio.wait_for(task, 5)
    assert [r.canary for r in seen] == [None, "1" * 16]


def test_workers_sharing_a_model_folder_write_a_version_together_safely(tmp_path: Path) -> None:
    import hashlib
    import threading

    from function.transport.modelstore import _write_checked, file_version

    data = bytes(range(256)) * (16 * 1024)  # 4 MB
    version = hashlib.sha256(data).hexdigest()[:16]
    dest = tmp_path / "models" / f"{version}.onnx"
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(5):
                _write_checked(dest, data, version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and file_version(dest) == version
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no partial left behind
