"""The load generator against a real nats-server and real in-process `tiny` workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nats
import pytest
from PIL import Image
from typer.testing import CliRunner

from function.cli import full_app
from function.contract.settings import Priority, job_subject
from function.local.nats_server import EmbeddedNats
from loadgen.report.tables import write_report
from loadgen.run.generator import LoadOptions, LoadRun
from loadgen.run.profiles import build_profile
from loadgen.run.records import RunReport
from loadgen.run.runner import tiny_png
from tests.conftest import WorkerFactory
from tests.helpers import failing_model

pytestmark = pytest.mark.timeout(60)


async def _run(url: str, rate: float, duration: float, seed: int) -> tuple[LoadRun, RunReport]:
    """A constant-rate run of the tiny function."""
    nc = await nats.connect(url)
    try:
        profile = build_profile("constant", rate=rate, duration=duration)
        options = LoadOptions(function="tiny", payload=tiny_png(), drain_timeout_s=10, seed=seed)
        run = LoadRun(nc, profile, options, nats_url=url)
        return run, await run.run()
    finally:
        await nc.drain()


async def test_rate_is_kept_and_every_job_is_answered(
    nats_server: EmbeddedNats, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    await start_worker(function="tiny")
    run, report = await _run(nats_server.url, rate=25, duration=4, seed=5)
    a = report.accounting
    assert report.ok, a
    assert a.scheduled == a.published == a.acknowledged == a.answered_ok
    assert a.missing == 0 and not a.rejected
    # the offered rate is the profile's (Poisson: 100 expected, seeded), sent on time
    assert abs(a.scheduled - 100) < 5 * math.sqrt(100)
    assert report.offered_rate == pytest.approx(25, rel=0.3)
    assert report.generator_lag_ms.p99 < 250  # 2 slow shared cores: generous
    steady = [p.arrivals for p in report.timeline if 0 < p.t < 3]
    assert sum(steady) / len(steady) == pytest.approx(25, rel=0.5)
    # latency is measured from the scheduled time and is plausible for the tiny model
    assert 0 < report.latency_ms.p50 < 1000
    assert report.peak_replicas == 1 and report.workers_seen == 1
    assert report.peak_backlog is not None
    # the files: JSON that parses back, PNGs that are PNGs
    written = write_report(report, tmp_path / "report")
    parsed = RunReport.model_validate_json((tmp_path / "report" / "report.json").read_text())
    assert parsed.accounting == a and parsed.files == written.files
    for name in ("latency.png", "load.png"):
        path = tmp_path / "report" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    # what it used, for `surge cost`: replicas seen, every result's compute, the cold start
    usage = report.usage
    assert usage is not None and len(usage.arrivals_s) == a.published
    compute_ms = [c for c in run.ledger.compute_ms if not math.isnan(c)]
    assert len(compute_ms) == a.answered_ok and all(c > 0 for c in compute_ms)
    assert usage.compute_s == pytest.approx(sum(compute_ms) / 1000)
    assert len(usage.jobs) == a.answered_ok  # each answer's time and compute: for --from/--to
    assert sum(c for _, c in usage.jobs) == pytest.approx(usage.compute_s)
    assert usage.cold_start_s > 0 and usage.running_before == 1  # up before the run
    assert max(r for _, r in usage.timeline) == 1 and usage.timeline[-1][1] == 0
    report_file = str(tmp_path / "report" / "report.json")
    got = CliRunner().invoke(full_app(), ["cost", report_file, "--json"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.output)["used_s"] == pytest.approx(usage.compute_s)


async def test_a_withheld_job_is_reported_missing(
    nats_server: EmbeddedNats, start_worker: WorkerFactory
) -> None:
    await start_worker(function="tiny")
    withheld, refused = 3, 5

    def route(index: int) -> str:
        if index == refused:
            return "not.a.surge.subject"  # no stream takes it: JetStream has no responder
        # stored by JetStream (acked), but no worker consumes this function
        function = "nobody" if index == withheld else "tiny"
        return job_subject(Priority.NORMAL, function)

    nc = await nats.connect(nats_server.url)
    try:
        profile = build_profile("constant", rate=10, duration=2)
        options = LoadOptions(function="tiny", payload=tiny_png(), drain_timeout_s=2, seed=2)
        run = LoadRun(nc, profile, options, route=route)
        report = await run.run()
    finally:
        await nc.drain()
    a = report.accounting
    assert not report.ok
    assert a.missing == 1 and a.missing_ids == [run.ledger.job_id(withheld)]
    assert a.rejected == {"no_stream": 1}
    assert a.acknowledged == a.published - 1  # the withheld one was stored, then lost
    assert a.answered_ok == a.published - 2
    assert a.lost == 2


async def test_dead_letters_are_read_from_surge_dead(
    nats_server: EmbeddedNats, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    model = failing_model(tmp_path / "fails.onnx")
    await start_worker(
        function="tiny", model_path=model, max_deliver=2, nak_delay_s=0.05, warmup_batch_sizes=[]
    )
    _, report = await _run(nats_server.url, rate=4, duration=1.5, seed=3)
    a = report.accounting
    assert a.published > 0
    assert a.dead_lettered == a.published
    assert a.answered_error == {"max_deliver_exceeded": a.published}
    assert a.missing == 0 and report.ok


def test_a_second_not_sampled_keeps_the_last_replica_count() -> None:
    from loadgen.run.ledger import Ledger
    from loadgen.run.timeline import build_timeline, usage_of_run

    ledger = Ledger("run")
    samples = [(1, 0, 2), (2, 0, 2), (4, 0, 2), (5, 0, 2)]  # second 3's sample was skipped
    timeline = build_timeline(ledger, samples, 5)
    usage = usage_of_run(ledger, timeline, cold_start_s=4.0, running_before=2)
    assert usage is not None and usage.timeline == [(0.0, 2), (5.0, 0)]  # no phantom starts
