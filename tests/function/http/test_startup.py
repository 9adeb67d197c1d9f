"""Fatal misconfiguration stops the worker at once, in one line, before NATS is touched;
settings read the same from the environment, from func's `start(cfg)` and from func.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from function.contract.settings import InvalidSettings, WorkerSettings
from function.http.func import Function, settings_from
from function.http.serve import http_port
from function.local.nats_server import EmbeddedNats, free_port
from function.worker import StartupError, Worker

REPO = Path(__file__).resolve().parents[3]


def surge_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`surge worker ...` as a user runs it; it must end on its own."""
    return subprocess.run(
        [sys.executable, "-m", "function", "worker", "--http-port", str(free_port()), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def nothing_created(url: str) -> None:
    """No stream (hence no consumer) exists on the server."""
    nc = await nats.connect(url)
    try:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info("SURGE_JOBS")
    finally:
        await nc.close()


@pytest.mark.nats
async def test_unknown_function_exits_in_one_line_before_creating_anything(
    nats_server: EmbeddedNats,
) -> None:
    done = surge_worker("-f", "resize", "--nats-url", nats_server.url, env={})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "surge: unknown function 'resize'; built-in functions are remove-bg, nsfw, tiny "
        "(or set SURGE_TASK=module:factory for your own)"
    ]
    await nothing_created(nats_server.url)


@pytest.mark.nats
async def test_invalid_provider_exits_in_one_line(nats_server: EmbeddedNats) -> None:
    done = surge_worker("--nats-url", nats_server.url, env={"SURGE_PROVIDERS": "cuda,rocm"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "surge: invalid settings: SURGE_PROVIDERS item 1 'rocm': "
        "Input should be 'tensorrt', 'cuda' or 'cpu'"
    ]
    await nothing_created(nats_server.url)


async def test_worker_start_checks_before_connecting() -> None:
    """An embedder's `Worker.start()` fails the same way, without a NATS server at all."""
    worker = Worker(WorkerSettings(nats_url=f"nats://127.0.0.1:{free_port()}", function="resize"))
    with pytest.raises(StartupError, match="unknown function 'resize'"):
        await worker.start()
    assert worker.nc is None


async def test_func_start_fails_at_once_on_a_bad_setting() -> None:
    """func-python calls `start(cfg)` in its lifespan: a raise there fails the startup."""
    function = Function()
    with pytest.raises(InvalidSettings, match="SURGE_MAX_BATCH '0'"):
        function.start({"SURGE_MAX_BATCH": "0"})
    with pytest.raises(StartupError, match="unknown function 'resize'"):
        function.start({"SURGE_FUNCTION": "resize"})
    assert function.worker is None
    # func-python 0.8.1 logs nothing and serves on without start: the probe restarts it
    assert function.alive() == (False, f"start failed: {function.start_error}")


@pytest.mark.parametrize("text", ['["cuda","cpu"]', "cuda,cpu", " cuda , cpu "])
def test_list_settings_take_json_or_commas(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGE_PROVIDERS", text)
    monkeypatch.setenv("SURGE_WARMUP_BATCH_SIZES", "1,8")
    from_env = WorkerSettings()
    from_cfg = settings_from({"SURGE_PROVIDERS": text, "SURGE_WARMUP_BATCH_SIZES": "[1, 8]"})
    for settings in (from_env, from_cfg):
        assert settings.providers == ["cuda", "cpu"]
        assert settings.warmup_batch_sizes == [1, 8]


def test_cfg_wins_and_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGE_FUNCTION", "nsfw")
    settings = settings_from({"SURGE_FUNCTION": "tiny", "SURGE__CLI_PARSE_ARGS": "true"})
    assert settings.function == "tiny"  # cfg wins; pydantic-settings' own options stay out
    with pytest.raises(InvalidSettings) as caught:
        settings_from({"SURGE_PROVIDERS": '["cuda",'})
    assert str(caught.value) == (
        """invalid settings: SURGE_PROVIDERS '["cuda",': """
        """Value error, not a JSON list; write it as ["a","b"] or a,b"""
    )


def test_port_comes_from_knative_unless_surge_http_port_is_set() -> None:
    assert http_port(WorkerSettings(), env={}) == 8080
    assert http_port(WorkerSettings(), env={"PORT": "9000"}) == 9000
    assert http_port(WorkerSettings(http_port=7000), env={"PORT": "9000"}) == 7000
    with pytest.raises(InvalidSettings, match="PORT '0'"):
        http_port(WorkerSettings(), env={"PORT": "0"})
