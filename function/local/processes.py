"""Worker processes: start `python -m function worker`, wait until ready, stop (drain).

Used by the embedded stack, the demo, the benchmarks and the tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from nats.aio.msg import Msg

from function.contract.heartbeat import Heartbeat, WorkerState
from function.contract.nats_auth import NatsAuth
from function.contract.settings import heartbeat_subject
from function.transport.connect import open_nats

__all__ = ["start_worker_process", "stop_worker_processes", "wait_ready"]


def start_worker_process(
    nats_url: str, function: str, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m function worker` as a child process, logging to `log_path`."""
    child_env = {
        **os.environ,
        "SURGE_NATS_URL": nats_url,
        "SURGE_FUNCTION": function,
        **(env or {}),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "function", "worker"], env=child_env, stdout=log, stderr=log
        )


def stop_worker_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """SIGTERM every worker (they drain), then wait; kill one that outlives `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(
    nats_url: str, function: str, count: int, timeout: float, auth: NatsAuth | None = None
) -> list[Heartbeat]:
    """Wait until `count` workers of `function` report ready in their heartbeats."""
    nc = await open_nats(nats_url, auth, name="surge-wait-ready")
    ready: dict[str, Heartbeat] = {}
    done = asyncio.Event()

    async def on_beat(msg: Msg) -> None:
        beat = Heartbeat.model_validate_json(msg.data)
        if beat.state is WorkerState.READY:
            ready[beat.worker_id] = beat
            if len(ready) >= count:
                done.set()

    await nc.subscribe(heartbeat_subject(function), cb=on_beat)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await nc.drain()
    return list(ready.values())
