"""`RolloutFollower`: a worker follows its function's rollout record (KV watch).

    follower = RolloutFollower(store, settings, models, base=adapter)
    await follower.start()      # serve what the record names now (loaded before ready)
    ...                         # each change: fetch, load and warm in a thread, then swap
    await follower.stop()

A version is fetched from the Object Store, checked against its hash, loaded and warmed
off the event loop; only then does `ModelSet.serve` swap it in, between batches. The
model the worker was deployed with (`base`) serves while the record names no stable
version. A canary that fails too often here (`ModelSet.on_failing`), or that cannot be
loaded, is rolled back in the record (compare-and-set), and every worker follows.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from function.contract.rollout import ModelRollout, RolloutError
from function.contract.settings import WorkerSettings
from function.engine.batchmodel import BatchModel
from function.engine.modelset import ModelSet
from function.models.loader import load_model
from function.models.registry import load_task
from function.models.warmup import ModelAdapter, effective_max_batch
from function.telemetry import METRICS, set_process_fields
from function.transport.modelstore import ModelStore
from function.transport.periodic import end_task

__all__ = ["WATCH_RETRY_S", "WRITE_GRACE_S", "RolloutFollower"]

log = logging.getLogger("surge.rollout")
WATCH_RETRY_S = 1.0  # pause before watching again after the watch failed
WRITE_GRACE_S = 2.0  # how long stopping waits for a rollback being written
RECHECK_S = 30.0  # the record is also read this often, should the watch go quiet
LOAD_TRIES, LOAD_RETRY_S = 3, 0.5  # a version that fails to load is tried again, then given up


class RolloutFollower:
    """Keeps a `ModelSet` serving what the function's rollout record names."""

    def __init__(
        self, store: ModelStore, settings: WorkerSettings, models: ModelSet, base: BatchModel
    ) -> None:
        self._store = store
        self._settings = settings
        self._function = settings.function
        self.models = models
        self._loaded: dict[str, BatchModel] = {base.info.version: base}
        self._base = base.info.version
        self._latest: ModelRollout | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._reported: set[tuple[str, str]] = set()  # (role, version) in the metrics
        models.on_failing = self._failing

    async def start(self) -> None:
        """Serve what the record names now, then follow its changes."""
        record, _ = await self._store.read(self._function)
        await self._apply(record)
        self._watch = asyncio.create_task(self._follow())
        self._task = asyncio.create_task(self._apply_latest())
        self._recheck = asyncio.create_task(self._read_now_and_then())

    @property
    def latest(self) -> ModelRollout | None:
        """The record as last watched (None before the watch's first)."""
        return self._latest

    async def stop(self) -> None:
        """Stop following; a rollback being written gets a moment to land first."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=WRITE_GRACE_S)
        for task in (self._watch, self._task, self._recheck, *self._writes):
            if task is not None:
                await end_task(task, WRITE_GRACE_S)

    async def _follow(self) -> None:
        while True:
            try:
                async for record in self._store.follow(self._function):
                    self._latest = record  # only the newest matters when loads lag behind
                    self._changed.set()
            except Exception as exc:  # e.g. the connection was lost for a while
                log.warning("watching the rollout of %s failed (%r); again", self._function, exc)
            await asyncio.sleep(WATCH_RETRY_S)

    async def _read_now_and_then(self) -> None:
        """A backstop for a watch gone quiet (nats-py's KV watch does not fail when its
        consumer is lost): read the record every `RECHECK_S`; a newer one is applied."""
        while True:
            await asyncio.sleep(RECHECK_S)
            try:
                record, revision = await self._store.read(self._function)
            except Exception as exc:
                log.debug("reading the rollout of %s failed: %r", self._function, exc)
                continue
            latest = self._latest
            if (latest is None and revision > 0) or (
                latest is not None and record.updated_at > latest.updated_at
            ):
                self._latest = record
                self._changed.set()

    async def _apply_latest(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._latest is not None:
                try:
                    await self._apply(self._latest)
                except Exception:
                    log.exception("could not follow the rollout of %s", self._function)

    async def _apply(self, record: ModelRollout) -> None:
        """Load what `record` names (the stable version first), then swap it in."""
        stable = await self._model(record.stable or self._base)
        if stable is None:  # keep serving what serves: the record names a broken stable
            stable = self.models.serving.stable
        canary = None
        if record.canary is None:
            self.models.forget_failures()  # the rollback landed: a new rollout may retry
        else:
            canary = await self._model(record.canary)
            if canary is None:
                self._failing(record.canary, f"canary {record.canary} could not be loaded")
        self.models.serve(stable, canary, record.canary_share)
        self._report()
        keep = {self._base, *self.models.versions}
        self._loaded = {v: model for v, model in self._loaded.items() if v in keep}

    def _report(self) -> None:
        """The versions serving, in the metrics and on every log line."""
        serving = self.models.serving
        shares = {("stable", serving.stable.info.version): 1.0 - serving.share}
        if serving.canary is not None:
            shares[("canary", serving.canary.info.version)] = serving.share
        for role, version in self._reported - shares.keys():
            METRICS.model_share.remove(self._function, version, role)
        for (role, version), share in shares.items():
            METRICS.model_share.labels(self._function, version, role).set(share)
        self._reported = set(shares)
        set_process_fields(model_version=serving.stable.info.version)

    async def _model(self, version: str) -> BatchModel | None:
        """The loaded, warm version (fetched and loaded first if new); None if it fails."""
        if version in self._loaded:
            return self._loaded[version]
        folder = self._settings.model_dir / "rollout" / self._function
        for attempt in range(1, LOAD_TRIES + 1):
            try:
                path = await self._store.fetch(self._function, version, folder / f"{version}.onnx")
                model = await asyncio.to_thread(self._load, path)
                break
            except Exception as exc:  # a file that is not its version's fails at once; a
                # fetch or load that may pass (the bucket, memory) is tried again
                final = isinstance(exc, RolloutError) or attempt == LOAD_TRIES
                log.log(
                    logging.ERROR if final else logging.WARNING,
                    "model %s of %s did not load (attempt %d): %r",
                    version,
                    self._function,
                    attempt,
                    exc,
                )
                if final:
                    return None
                await asyncio.sleep(LOAD_RETRY_S * attempt)
        self._loaded[version] = model
        log.info("model %s of %s loaded and warm", version, self._function)
        return model

    def _load(self, path: Path) -> BatchModel:
        """(a thread) Open the version's session and warm it at the batch sizes in use."""
        settings = self._settings
        task = load_task(settings.function, settings.task)
        loaded = load_model(
            task,
            cache_dir=settings.model_dir,
            model_path=path,
            providers=settings.providers,
            intra_op_threads=max(1, settings.intra_op_threads),
        )
        loaded.info = loaded.info.model_copy(update={"name": task.model_name})
        max_batch = effective_max_batch(settings, loaded)
        return ModelAdapter(loaded, loaded.warmup(sorted({1, max_batch})), max_batch)

    def _failing(self, version: str, reason: str) -> None:
        """Write the rollback of `version` (if it is still the canary) for every worker."""

        def step(record: ModelRollout) -> ModelRollout:
            return record.rolled_back(reason) if record.canary == version else record

        async def write() -> None:
            try:
                await self._store.change(self._function, step)
            except Exception as exc:
                log.error("could not write the rollback of %s: %r", version, exc)

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
