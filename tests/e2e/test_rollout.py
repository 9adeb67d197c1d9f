"""A model rollout under load, through a real nats-server, a real worker and real ONNX
graphs (two versions of `tiny`, and one whose answers the task rejects): no job lost or
answered twice, the canary's share as routed, every result after the promote from the new
version, and a failing canary rolled back by the worker itself."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result as CliResult
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from function.cli import full_app
from function.client import SurgeClient
from function.contract.rollout import routes_to_canary
from function.contract.wire import JobStatus, Result, ScoresOutput
from function.local.nats_server import EmbeddedNats
from function.transport.modelstore import ModelStore
from function.worker import Worker
from tests.conftest import WorkerFactory
from tests.helpers import failing_model, png_bytes
from tests.rollout_models import broken_tiny, scaled_tiny

pytestmark = pytest.mark.timeout(90)

app = full_app()
runner = CliRunner()


async def _surge(server: EmbeddedNats, *args: str) -> CliResult:
    """`surge models ARGS` in a thread (the command runs its own event loop)."""
    argv = ["models", *args, "--nats-url", server.url]
    done = await asyncio.to_thread(runner.invoke, app, argv, env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    return done


async def _until(done: Callable[[], bool], timeout: float) -> None:
    """Return once `done()`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if done():
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class Answers:
    """Every result published to one reply subject, duplicates included."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.results: dict[str, Result] = {}

    async def on_result(self, msg: Msg) -> None:
        result = Result.model_validate_json(msg.data)
        self.count[result.job_id] += 1
        self.results[result.job_id] = result

    async def all_of(self, ids: list[str], timeout: float) -> None:
        await _until(lambda: all(job_id in self.results for job_id in ids), timeout)


async def _serving(worker: Worker, versions: list[str], timeout: float = 20) -> None:
    consumer = worker.consumer
    assert consumer is not None
    await _until(lambda: consumer.models.versions == versions, timeout)


async def test_rollout_under_load_canary_then_promote(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    # batches of up to 8 asked for: left to tuning, a fast machine may choose batch 1
    worker = await start_worker(function="tiny", max_batch=8, max_batch_wait_ms=20)
    assert worker.model is not None
    v1 = worker.model.info.version
    answers = Answers()
    inbox = client.nc.new_inbox()
    await client.nc.subscribe(inbox, cb=answers.on_result)
    image = png_bytes(color=(200, 100, 50))
    phase = "before"
    submitted: dict[str, list[str]] = {}
    stop = asyncio.Event()

    # Fixed job ids: the canary share checked below is then the same on every run (any
    # 1,000 to 3,000 of these in a row route 10 % within the bound; random ids made it a
    # 3-sigma draw that failed about one run in 400).
    numbers = itertools.count()

    async def produce() -> None:  # a steady stream of jobs through every step, in bursts
        while not stop.is_set():  # that the worker batches
            at = phase
            burst = [
                client.submit(
                    image, function="tiny", reply_to=inbox, job_id=f"rollout-{next(numbers):05d}"
                )
                for _ in range(8)
            ]
            submitted.setdefault(at, []).extend(await asyncio.gather(*burst))
            await asyncio.sleep(0.005)

    async def submitted_in(name: str, count: int) -> None:
        await _until(lambda: len(submitted.get(name, [])) >= count, 40)

    pushed = await _surge(
        nats_server, "push", str(scaled_tiny(tmp_path / "v2.onnx", 0.5)), "-f", "tiny"
    )
    v2 = pushed.stdout.split()[-1]
    producer = asyncio.create_task(produce())
    try:
        await submitted_in("before", 100)
        phase = "swap"  # the stream goes on; the jobs before all ran before the rollout
        await answers.all_of(submitted["before"], timeout=20)
        await _surge(nats_server, "rollout", "tiny", v2, "--canary", "10%")
        await _serving(worker, [v1, v2])
        assert (_share("tiny", v1, "stable"), _share("tiny", v2, "canary")) == (0.9, 0.1)
        phase = "canary"
        await submitted_in("canary", 1000)
        phase = "swap2"
        await answers.all_of(submitted["canary"], timeout=20)
        await _surge(nats_server, "promote", "tiny")
        await _serving(worker, [v2])
        phase = "promoted"
        await submitted_in("promoted", 100)
    finally:
        stop.set()
        await producer
    every = [job_id for ids in submitted.values() for job_id in ids]
    await answers.all_of(every, timeout=30)
    await asyncio.sleep(0.3)  # a second answer, were there one, would be here by now
    assert set(answers.count) == set(every)  # none lost, none foreign
    assert max(answers.count.values()) == 1  # none answered twice
    assert all(r.status is JobStatus.OK for r in answers.results.values())
    assert all(r.attempts == 1 for r in answers.results.values())  # none redone

    def version(job_id: str) -> str:
        model = answers.results[job_id].model
        assert model is not None and model.name == "tiny"
        return model.version

    assert {version(j) for j in submitted["before"]} == {v1}
    canary = submitted["canary"]
    on_v2 = [j for j in canary if version(j) == v2]
    assert {j for j in canary if routes_to_canary(j, 0.1)} == set(on_v2)  # as routed
    assert abs(len(on_v2) - 0.1 * len(canary)) <= 3 * (0.09 * len(canary)) ** 0.5 + 1
    assert {version(j) for j in canary} == {v1, v2}
    assert max(answers.results[j].timings.batch_size for j in canary) > 1  # real batches
    assert {version(j) for j in submitted["promoted"]} == {v2}

    def mean(v: str) -> float:
        scores = answers.results[next(j for j in every if version(j) == v)].outputs["scores"]
        assert isinstance(scores, ScoresOutput)
        return scores.scores["mean"]

    assert mean(v2) == pytest.approx(mean(v1) * 0.5, rel=1e-5)  # the versions differ
    status = await _surge(nats_server, "status", "tiny", "--workers", "1")
    assert f"tiny: {v2} serves every job" in status.stdout
    assert f"worker {worker.worker_id}: {v2}\n" in status.stdout  # from its heartbeat


async def test_a_failing_canary_is_rolled_back_by_the_workers_and_its_jobs_answered(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = await start_worker(function="tiny", canary_min_jobs=20, canary_max_error_rate=0.2)
    other = await start_worker(function="tiny", canary_min_jobs=20, canary_max_error_rate=0.2)
    assert worker.model is not None
    v1 = worker.model.info.version
    answers = Answers()
    inbox = client.nc.new_inbox()
    await client.nc.subscribe(inbox, cb=answers.on_result)
    pushed = await _surge(
        nats_server, "push", str(broken_tiny(tmp_path / "bad.onnx")), "-f", "tiny"
    )
    bad = pushed.stdout.split()[-1]
    await _surge(nats_server, "rollout", "tiny", bad, "--canary", "50%")
    await _serving(worker, [v1, bad])
    await _serving(other, [v1, bad])
    image = png_bytes(color=(10, 20, 30))
    ids = [await client.submit(image, function="tiny", reply_to=inbox) for _ in range(200)]
    await answers.all_of(ids, timeout=40)
    await asyncio.sleep(0.3)
    assert max(answers.count.values()) == 1
    assert all(answers.results[j].status is JobStatus.OK for j in ids)  # retried on v1
    assert {answers.results[j].model.version for j in ids} == {v1}  # type: ignore[union-attr]
    for each in (worker, other):  # whichever judged it, both follow the rollback
        await _serving(each, [v1])
    store = await ModelStore.open(client.nc.jetstream())
    record, _ = await store.read("tiny")
    assert record.canary is None and record.stable is None
    assert record.reason is not None and f"canary {bad} failed" in record.reason
    status = await _surge(nats_server, "status", "tiny")
    assert "last rollback: canary" in status.stdout


def test_rollout_commands_fail_in_one_clear_line(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    def surge(*args: str) -> CliResult:
        argv = ["models", *args, "--nats-url", nats_server.url]
        return runner.invoke(app, argv, env={"COLUMNS": "200"})

    nothing = surge("status", "tiny")
    assert nothing.exit_code == 1
    assert (
        nothing.stderr.strip() == "surge models: no model has been pushed yet (`surge models push`)"
    )
    model = scaled_tiny(tmp_path / "v2.onnx", 2.0)
    version = surge("push", str(model), "-f", "tiny").stdout.split()[-1]
    unknown = surge("rollout", "tiny", "ffff0000")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("surge models: tiny has no model version 'ffff0000'")
    assert len(unknown.stderr.strip().splitlines()) == 1
    for step in ("promote", "rollback"):
        idle = surge(step, "tiny")
        assert (idle.exit_code, idle.stderr.strip()) == (
            1,
            "surge models: no rollout in progress for tiny",
        )
    bad = surge("rollout", "tiny", version, "--canary", "150%")
    assert bad.exit_code == 2 and "canary share must be in (0, 100%]" in bad.stderr
    started = surge("rollout", "tiny", version[:6], "--canary", "25%")
    assert started.stdout.strip() == (
        f"tiny: {version} serves 25.0% of jobs (canary), the deployed model the rest"
    )
    listed = surge("list", "--json")
    assert [json.loads(line)["canary"] for line in listed.stdout.splitlines()] == [version]
    assert "rolled back" in surge("rollback", "tiny").stdout + surge("status", "tiny").stdout


async def test_a_new_worker_starts_on_the_promoted_version_and_skips_a_broken_canary(
    nats_server: EmbeddedNats, client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    store = await ModelStore.open(client.nc.jetstream(), create=True)
    v3 = await store.push("tiny", scaled_tiny(tmp_path / "v3.onnx", 3.0))
    await store.change("tiny", lambda r: r.canary_of(v3, 0.5).promoted())
    worker = await start_worker(function="tiny")
    assert worker.consumer is not None and worker.consumer.models.versions == [v3]  # at ready
    assert _share("tiny", v3, "stable") == 1.0
    inbox = await client.inbox()
    job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
    result = (await inbox.wait([job_id], timeout=20))[job_id]
    assert result.model is not None and result.model.version == v3
    unloadable = await store.push("tiny", failing_model(tmp_path / "fails.onnx"))
    await store.change("tiny", lambda r: r.canary_of(unloadable, 0.5))
    await _until(lambda: store_reason(worker) is not None, 20)
    record, _ = await store.read("tiny")
    assert (record.stable, record.canary) == (v3, None)
    assert record.reason == f"canary {unloadable} could not be loaded"
    assert worker.consumer.models.versions == [v3]
    assert _share("tiny", unloadable, "canary") is None


def _share(function: str, version: str, role: str) -> float | None:
    labels = {"function": function, "version": version, "role": role}
    return REGISTRY.get_sample_value("surge_model_share", labels)


def store_reason(worker: Worker) -> str | None:
    """The reason the worker's follower last saw a rollback for (None: none yet)."""
    follower = worker.rollout
    assert follower is not None
    latest = follower.latest
    return latest.reason if latest is not None else None


async def test_the_result_cache_answers_only_from_the_stable_version(
    client: SurgeClient, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    worker = await start_worker(function="tiny", cache=True)
    assert worker.model is not None
    v1 = worker.model.info.version
    inbox = await client.inbox()
    image = png_bytes(color=(1, 2, 3))

    async def answer() -> Result:
        job_id = await client.submit(image, function="tiny", reply_to=inbox.subject)
        return (await inbox.wait([job_id], timeout=20))[job_id]

    async def cached_answer() -> Result:  # the cache is written after the reply
        for _ in range(50):
            result = await answer()
            if result.timings.cache_hit:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError("never answered from the cache")

    assert (await cached_answer()).model.version == v1  # type: ignore[union-attr]
    store = await ModelStore.open(client.nc.jetstream(), create=True)
    v2 = await store.push("tiny", scaled_tiny(tmp_path / "v2.onnx", 0.5))
    await store.change("tiny", lambda r: r.canary_of(v2, 1.0))
    await _serving(worker, [v1, v2])
    on_canary = await answer()  # every job to the canary: computed, never remembered
    assert (on_canary.model.version, on_canary.timings.cache_hit) == (v2, False)  # type: ignore[union-attr]
    await store.change("tiny", lambda r: r.promoted())
    await _serving(worker, [v2])
    first = await answer()  # no answer of v1's from the cache after the promote
    assert (first.model.version, first.timings.cache_hit) == (v2, False)  # type: ignore[union-attr]
    assert (await cached_answer()).model.version == v2  # type: ignore[union-attr]


async def test_a_worker_whose_watch_went_quiet_still_follows_the_record(
    client: SurgeClient,
    start_worker: WorkerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from function.engine import rollout

    monkeypatch.setattr(rollout, "RECHECK_S", 0.2)
    worker = await start_worker(function="tiny")
    follower = worker.rollout
    assert follower is not None and follower._watch is not None
    follower._watch.cancel()  # as if its watch's consumer were lost without an error
    store = await ModelStore.open(client.nc.jetstream(), create=True)
    v4 = await store.push("tiny", scaled_tiny(tmp_path / "v4.onnx", 4.0))
    await store.change("tiny", lambda r: r.canary_of(v4, 1.0).promoted())
    consumer = worker.consumer
    assert consumer is not None
    await _until(lambda: consumer.models.versions == [v4], 20)
