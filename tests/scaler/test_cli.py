"""The commands as a user runs them: `surge scaler serve`, `surge up`, `surge prewarm`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from function.cli import full_app
from function.client import SurgeClient
from function.local.nats_server import EmbeddedNats, free_port
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.prewarm import load_plans
from tests.helpers import png_bytes
from tests.scaler.conftest import eventually, ref

app = full_app()

# `surge up` starts its own nats-server and workers (no fixture says so).
pytestmark = [pytest.mark.timeout(90), pytest.mark.nats]


def surge(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "function", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def test_scaler_serve_answers_keda_and_exports_metrics(
    nats_server: EmbeddedNats, tmp_path
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    env = {
        "SURGE_NATS_URL": nats_server.url,
        "SURGE_SCALER_GRPC_HOST": "127.0.0.1",
        "SURGE_SCALER_GRPC_PORT": str(grpc_port),
        "SURGE_SCALER_METRICS_HOST": "127.0.0.1",
        "SURGE_SCALER_METRICS_PORT": str(metrics_port),
    }
    process = surge("scaler", "serve", env=env, log=tmp_path / "scaler.log")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            keda = pb_grpc.ExternalScalerStub(channel)

            async def answers() -> bool:
                try:
                    return not (await keda.IsActive(ref())).result
                except grpc.aio.AioRpcError:
                    return False

            await eventually(answers, timeout=30, interval=0.3)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b'surge_scaler_active{function="tiny"} 0.0' in text
        assert b"surge_scaler_polls_total" in text
    finally:
        assert stop(process) == 0
    lines = (tmp_path / "scaler.log").read_text().splitlines()
    assert any('"logger": "surge.scaler.server"' in line for line in lines)  # JSON logs


async def test_surge_up_runs_workers_only_while_there_is_work(tmp_path) -> None:
    port = free_port()
    env = {"SURGE_MODEL_DIR": str(tmp_path / "models")}
    args = ("up", "-f", "tiny", "--port", str(port), "--cooldown", "1", "--max-workers", "1")
    dirs = ("--store-dir", str(tmp_path / "nats"), "--log-dir", str(tmp_path / "logs"))
    process = surge(*args, *dirs, env=env, log=tmp_path / "up.log")
    try:
        url = f"nats://127.0.0.1:{port}"
        client = None
        deadline = time.monotonic() + 30
        while client is None:
            try:
                client = await SurgeClient.connect(url)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        async with client:
            await asyncio.sleep(1.0)
            assert not list((tmp_path / "logs").glob("worker-*.log"))  # idle: no worker
            inbox = await client.inbox()
            job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
            results = await inbox.wait([job_id], timeout=60)
            assert results[job_id].status.value == "ok"
            await inbox.close()
        # drained by the scaler after the cooldown, not at shutdown
        await eventually(lambda: _contains(tmp_path / "up.log", b"worker 1 stopped"), timeout=30)
    finally:
        assert stop(process) == 0


async def _contains(path: Path, needle: bytes) -> bool:
    data = await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else b"")
    return needle in data


def test_prewarm_command_stores_lists_and_cancels(nats_server: EmbeddedNats) -> None:
    runner = CliRunner()
    base = ["--nats-url", nats_server.url, "-f", "tiny"]
    stored = runner.invoke(app, ["prewarm", "--at", "+1h", "--rate", "20", "--for", "15m", *base])
    assert stored.exit_code == 0, stored.output
    plan_id = stored.output.split("\t")[0]
    listed = runner.invoke(app, ["prewarm", "--list", *base])
    assert listed.exit_code == 0 and plan_id in listed.output and "rate=20" in listed.output

    async def plans() -> list[str]:
        import nats

        nc = await nats.connect(nats_server.url)
        try:
            return [p.id for p in await load_plans(nc.jetstream(), "tiny")]
        finally:
            await nc.close()

    assert asyncio.run(plans()) == [plan_id]
    cancelled = runner.invoke(app, ["prewarm", "--cancel", plan_id, *base])
    assert cancelled.exit_code == 0 and "removed" in cancelled.output
    assert asyncio.run(plans()) == []
    bad = runner.invoke(app, ["prewarm", "--at", "soon", "--rate", "1", *base])
    assert bad.exit_code == 2
    none = runner.invoke(app, ["prewarm", "--at", "+1h", *base])  # neither rate nor replicas
    assert none.exit_code == 2
