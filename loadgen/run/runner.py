"""Run a profile from the command line: connect (or start an embedded stack), show progress.

With `embedded_workers`, a private nats-server and that many `surge worker` processes
are started for the run (logs next to the report) and drained (SIGTERM) afterwards.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from function.contract.parse import sniff_image_type
from function.local.nats_server import free_port
from function.local.processes import start_worker_process, stop_worker_processes, wait_ready
from function.transport.connect import open_nats
from loadgen.run.generator import LoadOptions, LoadRun, Snapshot
from loadgen.run.profiles import Profile
from loadgen.run.records import RunReport

__all__ = ["payload_for", "run_profile", "start_workers", "tiny_png"]


def tiny_png() -> bytes:
    """A 16x16 PNG: the default payload (cheap to decode, valid for every function)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def payload_for(image: Path | None) -> tuple[bytes, str]:
    """(payload, content type) for `--image`, or the tiny PNG."""
    if image is None:
        return tiny_png(), "image/png"
    data = image.read_bytes()
    return data, sniff_image_type(data) or "application/octet-stream"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    )


async def run_profile(
    profile: Profile,
    *,
    url: str,
    function: str,
    payload: bytes,
    content_type: str,
    seed: int,
    high_fraction: float,
    max_jobs: int | None,
    max_time: float | None,
    drain_timeout: float,
    embedded_workers: int | None,
    out: Path,
    console: Console | None,
) -> RunReport:
    """Run `profile` against `url` (or an embedded stack) with a progress bar."""
    from function.local.nats_server import EmbeddedNats

    options = LoadOptions(
        function=function,
        seed=seed,
        high_fraction=high_fraction,
        max_jobs=max_jobs,
        max_time_s=max_time,
        drain_timeout_s=drain_timeout,
        payload=payload,
        content_type=content_type,
    )
    async with contextlib.AsyncExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []
        if embedded_workers is not None:
            out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the run)
            server = stack.enter_context(EmbeddedNats(log_file=out / "nats-server.log"))
            url = server.url
            stack.callback(stop_worker_processes, procs)
            await start_workers(procs, url, function, embedded_workers, out)
        nc = await open_nats(url, name="surge-loadgen")
        stack.push_async_callback(nc.drain)
        progress = _progress(console) if console is not None else None
        task = None
        if progress is not None:
            stack.enter_context(progress)
            task = progress.add_task("publishing", total=None, info="")

        def on_sample(snap: Snapshot) -> None:
            if progress is None or task is None:
                return
            backlog = "-" if snap.backlog is None else f"{snap.backlog:,}"
            replicas = "-" if snap.replicas is None else str(snap.replicas)
            progress.update(
                task,
                description=snap.phase,
                completed=snap.scheduled,
                total=max(snap.expected, snap.scheduled),
                info=f"answered {snap.answered:,}  backlog {backlog}  replicas {replicas}",
            )

        run = LoadRun(nc, profile, options, nats_url=url, on_sample=on_sample)
        return await run.run()
    raise AssertionError("unreachable")  # pragma: no cover


async def start_workers(
    procs: list[subprocess.Popen[bytes]],
    url: str,
    function: str,
    count: int,
    logs: Path,
    timeout: float = 300.0,
) -> None:
    """Start `count` worker processes (each on a free HTTP port) and wait until all are
    ready; raise at once if one exits."""
    for i in range(count):
        env = {"SURGE_HTTP_PORT": str(free_port()), "SURGE_HTTP_HOST": "127.0.0.1"}
        procs.append(start_worker_process(url, function, logs / f"worker-{i}.log", env))
    deadline = time.monotonic() + timeout
    while count:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker exited with code {dead[0].returncode}; see {logs}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not ready within {timeout:.0f} s; see {logs}")
        with contextlib.suppress(TimeoutError):
            await wait_ready(url, function, count, timeout=2.0)
            return
