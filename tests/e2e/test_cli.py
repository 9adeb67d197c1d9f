"""The `surge` command against a real nats-server and worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from function.cli import full_app
from function.local.nats_server import EmbeddedNats, free_port
from function.local.processes import start_worker_process, wait_ready
from tests.conftest import WorkerFactory
from tests.helpers import gif_bytes, png_bytes

app = full_app()

runner = CliRunner()


def test_the_worker_command_imports_neither_the_scaler_nor_the_load_generator() -> None:
    code = (
        "import sys; from function.cli import _builtin; import function.cli;"
        "assert _builtin(['worker']);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('scaler', 'loadgen')"
        " or m.split('.')[0] in ('grpc', 'matplotlib'));"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("worker", "submit", "result", "models", "nats", "demo"):
        assert command in result.output
    submit_help = runner.invoke(app, ["submit", "--help"])
    assert "--wait" in submit_help.output and "--priority" in submit_help.output
    worker_help = runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "120"})
    assert "--cpu-processes" in worker_help.output and "--threads" in worker_help.output


async def test_submit_wait_out_then_result(
    nats_server: EmbeddedNats, start_worker: WorkerFactory, photos: dict[str, Path], tmp_path: Path
) -> None:
    await start_worker(function="remove-bg")
    out = tmp_path / "out"
    args = ["submit", str(photos["astronaut"]), "--wait", "--out", str(out), "-o", "cutout"]
    args += ["--nats-url", nats_server.url, "--function", "remove-bg", "--priority", "high"]
    submitted = await asyncio.to_thread(runner.invoke, app, args)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.split("\t")[0].strip().splitlines()[-1]
    assert "\tok\t" in submitted.output
    assert (out / f"{job_id}.cutout.png").stat().st_size > 1000
    stored = json.loads((out / f"{job_id}.json").read_text())
    assert stored["status"] == "ok"
    assert stored["outputs"]["cutout"]["data"] is None  # the image is a file, not base64
    assert stored["outputs"]["cutout"]["file"] == f"{job_id}.cutout.png"
    fetched = await asyncio.to_thread(
        runner.invoke, app, ["result", job_id, "--nats-url", nats_server.url]
    )
    assert fetched.exit_code == 0
    printed = json.loads(fetched.output)
    assert printed["job_id"] == job_id
    assert len(fetched.output) < 4000  # was half a megabyte of base64
    assert printed["outputs"]["cutout"]["data"].startswith("<")
    again = tmp_path / "again"
    args = ["result", job_id, "--out", str(again), "--nats-url", nats_server.url]
    saved = await asyncio.to_thread(runner.invoke, app, args)
    assert saved.exit_code == 0, saved.output
    assert saved.output.split() == [
        str(again / f"{job_id}.json"),
        str(again / f"{job_id}.cutout.png"),
    ]
    assert (again / f"{job_id}.cutout.png").read_bytes() == (
        out / f"{job_id}.cutout.png"
    ).read_bytes()


async def test_failed_job_and_missing_result_exit_non_zero(
    nats_server: EmbeddedNats, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    await start_worker(function="tiny")
    bad = tmp_path / "bad.gif"
    bad.write_bytes(gif_bytes())
    args = ["submit", str(bad), "--wait", "--function", "tiny", "--nats-url", nats_server.url]
    submitted = await asyncio.to_thread(runner.invoke, app, args)
    assert submitted.exit_code == 1
    assert "unsupported_media_type" in submitted.output
    missing = await asyncio.to_thread(
        runner.invoke, app, ["result", "nope", "--nats-url", nats_server.url]
    )
    assert missing.exit_code == 1


def _surge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "function", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("command", ["submit", "result"])
def test_no_nats_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    """Before: ten seconds (once 121 s and 60 tracebacks), and no hint what to do."""
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes())
    url = f"nats://127.0.0.1:{free_port()}"
    target = str(image) if command == "submit" else "some-job"
    done = _surge("--wait-for-nats", "0.5", command, target, "--nats-url", url)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"surge: no NATS server answered at {url} within 0.5 s (connection")
    assert "`surge nats`" in lines[0] and "--wait-for-nats" in lines[0]


def test_a_hostile_job_id_is_a_usage_error() -> None:
    done = runner.invoke(app, ["result", "a.b", "--nats-url", "nats://127.0.0.1:1"])
    assert done.exit_code == 2
    assert "JOB_ID" in done.output


async def test_a_wait_without_result_says_no_worker_runs(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes())
    args = ["submit", str(image), "--wait", "--timeout", "1", "-f", "tiny"]
    submitted = await asyncio.to_thread(runner.invoke, app, [*args, "--nats-url", nats_server.url])
    assert submitted.exit_code == 1
    assert "no result within 1 s" in submitted.stdout
    assert "no tiny worker is running (no heartbeat in 1 s)" in submitted.stderr
    assert "surge worker -f tiny" in submitted.stderr


async def test_a_worker_drained_by_sigterm_exits_0(
    nats_server: EmbeddedNats, model_dir: Path, tmp_path: Path
) -> None:
    """Before: uvicorn re-raised SIGTERM after the drain, so the exit read "code -15"."""
    env = {
        "SURGE_MODEL_DIR": str(model_dir),
        "SURGE_HTTP_HOST": "127.0.0.1",
        "SURGE_HTTP_PORT": str(free_port()),
        "SURGE_LOG_FORMAT": "text",
    }
    log_path = tmp_path / "worker.log"
    proc = start_worker_process(nats_server.url, "tiny", log_path, env)
    try:
        await wait_ready(nats_server.url, "tiny", 1, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, timeout=60)
    log = log_path.read_text()
    assert proc.returncode == 0, log[-2000:]
    last = log.strip().splitlines()[-1]  # a readable line: SURGE_LOG_FORMAT=text
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3} INFO    surge\.worker: stopped function=tiny", last), (
        log
    )
