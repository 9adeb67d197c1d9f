"""Model files and rollout records on NATS: push, read, compare-and-set, watch.

    store = await ModelStore.open(js, create=True)
    version = await store.push("remove-bg", Path("u2netp-v2.onnx"))
    await store.change("remove-bg", lambda r: r.canary_of(version, 0.1))
    async for record in store.follow("remove-bg"): ...     # every change, as it is made

`change` reads the record with its revision and writes only if nobody wrote since
(the KV's expected last sequence): two admins racing both land, one after the other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from pydantic import ValidationError

from function.contract.rollout import (
    MODEL_FILES_BUCKET,
    MODELS_BUCKET,
    ModelRollout,
    PushedVersion,
    RolloutError,
    model_object_name,
)

__all__ = ["CAS_TRIES", "ModelStore", "file_version"]

log = logging.getLogger("surge.modelstore")
CAS_TRIES = 20  # compare-and-set attempts before a change gives up
_CHUNK = 1 << 20


def file_version(path: Path) -> str:
    """A model file's version: the first 16 hex of its sha256 (as `ModelInfo.version`)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _facts(path: Path) -> tuple[str, int]:
    return file_version(path), path.stat().st_size


def _holds(path: Path, version: str) -> bool:
    return path.is_file() and file_version(path) == version


def _write_checked(dest: Path, data: bytes, version: str) -> None:
    """Write `data` to `dest` (atomically) if it is the file of `version`."""
    if hashlib.sha256(data).hexdigest()[:16] != version:
        raise RolloutError(f"the stored file of version {version} does not match its hash")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: workers sharing a model folder fetch the same version together
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        partial.write_bytes(data)
        partial.replace(dest)  # atomic: a reader sees a whole file, whoever wrote it
    finally:
        partial.unlink(missing_ok=True)


class ModelStore:
    """The `surge-models` KV bucket and the `surge-model-files` Object Store bucket."""

    def __init__(self, kv: KeyValue, files: ObjectStore) -> None:
        self.kv = kv
        self.files = files

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, create: bool = False, replicas: int = 1
    ) -> ModelStore:
        """Both buckets; made when missing if `create`, else `RolloutError` says none exist."""
        try:
            kv = await js.key_value(MODELS_BUCKET)
        except BucketNotFoundError:
            if not create:
                raise RolloutError("no model has been pushed yet (`surge models push`)") from None
            kv = await js.create_key_value(bucket=MODELS_BUCKET, history=5, replicas=replicas)
        try:
            files = await js.object_store(MODEL_FILES_BUCKET)
        except (NotFoundError, BucketNotFoundError):
            if not create:
                raise RolloutError("no model has been pushed yet (`surge models push`)") from None
            config = ObjectStoreConfig(bucket=MODEL_FILES_BUCKET, replicas=replicas)
            files = await js.create_object_store(MODEL_FILES_BUCKET, config=config)
        return cls(kv, files)

    async def read(self, function: str) -> tuple[ModelRollout, int]:
        """The function's record and its revision (0 and an empty record if none)."""
        try:
            entry = await self.kv.get(function)
        except KeyNotFoundError:
            return ModelRollout(function=function), 0
        return ModelRollout.model_validate_json(entry.value or b"{}"), int(entry.revision or 0)

    async def change(
        self, function: str, step: Callable[[ModelRollout], ModelRollout]
    ) -> ModelRollout:
        """Apply `step` to the latest record and write it only over that revision; read
        again and retry when another writer came first. `step`'s `RolloutError` ends it."""
        for _ in range(CAS_TRIES):
            record, revision = await self.read(function)
            changed = step(record)
            if changed is record:
                return record
            data = changed.model_dump_json().encode()
            try:
                if revision == 0:
                    await self.kv.create(function, data)
                else:
                    await self.kv.update(function, data, last=revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
                continue
            return changed
        raise RolloutError(f"{function}'s rollout record kept changing: try again")

    async def push(self, function: str, path: Path) -> str:
        """Store `path` as a version of `function`'s model and record it; its version."""
        version, size = await asyncio.to_thread(_facts, path)
        name = model_object_name(function, version)
        try:
            stored = not (await self.files.get_info(name)).deleted
        except NotFoundError:
            stored = False
        if not stored:
            handle = await asyncio.to_thread(path.open, "rb")
            with handle:
                await self.files.put(name, handle)
        pushed = PushedVersion(version=version, size=size, source=path.name[:256])
        await self.change(function, lambda record: record.pushed(pushed))
        return version

    async def fetch(self, function: str, version: str, dest: Path) -> Path:
        """`dest` with the version's file (checked against its version); kept when there."""
        if not await asyncio.to_thread(_holds, dest, version):
            found = await self.files.get(model_object_name(function, version))
            await asyncio.to_thread(_write_checked, dest, found.data or b"", version)
        return dest

    async def follow(self, function: str) -> AsyncGenerator[ModelRollout]:
        """The function's record now (if any) and at every change, until cancelled."""
        watcher = await self.kv.watch(function)
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue  # the end of the initial values, or a deleted record
                try:
                    yield ModelRollout.model_validate_json(entry.value)
                except ValidationError as exc:
                    log.warning("ignoring a rollout record that does not parse: %s", exc)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
