"""The `surge` command against a real nats-server and worker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from function.cli import full_app
from function.local.nats_server import EmbeddedNats
from tests.conftest import WorkerFactory
from tests.helpers import gif_bytes

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
    fetched = await asyncio.to_thread(
        runner.invoke, app, ["result", job_id, "--nats-url", nats_server.url]
    )
    assert fetched.exit_code == 0
    assert json.loads(fetched.output)["job_id"] == job_id


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
