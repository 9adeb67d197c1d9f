"""`surge loadgen run | compare | simulate` through Typer's CliRunner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from function.cli import full_app
from function.local.nats_server import EmbeddedNats, free_port
from loadgen.cli import is_loopback_url
from loadgen.run.records import RunReport
from loadgen.sim import SimReport

app = full_app()

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loopback_only_unless_the_url_is_given_explicitly(tmp_path: Path) -> None:
    assert is_loopback_url("nats://127.0.0.1:4222")
    assert is_loopback_url("nats://localhost:4222")
    assert is_loopback_url("tls://[::1]:4222")
    assert not is_loopback_url("nats://10.1.2.3:4222")
    assert not is_loopback_url("nats://nats.example.com:4222")
    result = runner.invoke(
        app,
        ["loadgen", "run", "--profile", "constant", "--duration", "1", "--out", str(tmp_path)],
        env={"SURGE_NATS_URL": "nats://10.1.2.3:4222"},
    )
    assert result.exit_code == 2
    assert "loopback" in result.output
    assert not (tmp_path / "report.json").exists()


def test_run_with_nobody_answering_fails_loudly_and_still_reports(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["loadgen", "run", "--profile", "constant", "--rate", "5", "--duration", "1.5"]
    args += ["--drain-timeout", "1", "--no-progress"]  # the default function: remove-bg
    args += ["--nats-url", nats_server.url, "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "missing" in result.output
    assert "why: no worker of 'remove-bg' sent a heartbeat during the run" in result.output
    assert "try: start one (`surge worker -f remove-bg`" in result.output
    report = RunReport.model_validate_json((out / "report.json").read_text())
    assert not report.ok and report.config.function == "remove-bg"
    assert report.workers_seen == 0 and report.other_functions_seen == {}
    assert report.accounting.missing == report.accounting.published > 0
    assert report.accounting.acknowledged == report.accounting.published
    assert report.peak_backlog == report.accounting.published  # nothing consumed them
    assert report.peak_replicas is None  # no heartbeats, no replica count
    assert report.generator_lag_ms.p99 < 250  # nobody answers: the generator keeps time
    assert _is_png(out / "latency.png") and _is_png(out / "load.png")

    compared = runner.invoke(app, ["loadgen", "compare", str(out / "report.json"), str(out)])
    assert compared.exit_code == 0, compared.output
    assert "B/A" in compared.output and "missing" in compared.output


def test_simulate_prints_assumptions_and_writes_files(tmp_path: Path) -> None:
    args = ["loadgen", "simulate", "--profile", "marketing-spike", "--rate", "2"]
    args += ["--factor", "20", "--duration", "600", "--tail", "300", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "assumptions" in result.output and "cold start" in result.output
    for policy in ("keda-default", "keda-tuned", "surge-prewarm", "fixed", "oracle"):
        assert policy in result.output
    report = SimReport.model_validate_json((tmp_path / "simulation.json").read_text())
    assert len(report.results) == 6
    assert _is_png(tmp_path / "simulation.png")
    bad = runner.invoke(app, ["loadgen", "simulate", "--policy", "magic", "--duration", "60"])
    assert bad.exit_code == 2


def test_run_with_no_nats_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Before: ten seconds, then a line that did not say how to get a server."""
    url = f"nats://127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "function", "--wait-for-nats", "0.5", "loadgen", "run"]
    args += ["--profile", "constant", "--duration", "1", "--no-progress", "--nats-url", url]
    args += ["--out", str(tmp_path / "run")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"surge loadgen: no NATS server answered at {url} within 0.5 s")
    assert "--embedded" in lines[0]
    assert not (tmp_path / "run" / "report.json").exists()
