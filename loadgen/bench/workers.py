"""Surge's side of `make bench`: worker processes measured through a real nats-server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import nats
import psutil

from function.client import SurgeClient
from function.contract.heartbeat import Heartbeat
from function.contract.nats_auth import NatsAuth
from function.contract.settings import Priority, WorkerSettings, job_subject
from function.local.nats_server import free_port
from function.local.processes import start_worker_process, stop_worker_processes, wait_ready
from function.models import fetch_photos
from function.transport.topology import ensure_streams
from loadgen.bench.baselines import CpuProbe, LoopRate, ReplyCollector, publish_backlog
from loadgen.run.runner import tiny_png

__all__ = [
    "WorkerProcess",
    "backlog_rate",
    "family",
    "family_rss",
    "surge_message_path",
    "surge_round_trips",
    "worker_throughput",
]


def family(pid: int) -> list[psutil.Process]:
    """A worker process and every process below it (its CPU processes)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def family_rss(pid: int) -> int:
    """Resident bytes of a worker and of its CPU processes together."""
    total = 0
    for process in family(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class WorkerProcess:
    """`surge worker` in a child process on a free HTTP port; stopped with SIGTERM."""

    def __init__(self, url: str, function: str, log: Path, env: dict[str, str]) -> None:
        self.url, self.function, self.log = url, function, log
        self.env = {**env, "SURGE_HTTP_PORT": str(free_port()), "SURGE_HTTP_HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> WorkerProcess:
        self.started = time.perf_counter()
        self.proc = start_worker_process(self.url, self.function, self.log, self.env)
        return self

    async def ready(self, timeout: float = 300) -> tuple[Heartbeat, float]:
        """Its ready heartbeat, and the seconds from `start()` until the bench saw it."""
        beats = await wait_ready(self.url, self.function, 1, timeout=timeout)
        return beats[0], time.perf_counter() - self.started

    def stop(self) -> None:
        if self.proc is not None:
            stop_worker_processes([self.proc])
            self.proc = None


async def worker_throughput(url: str, function: str, jobs: int, model_dir: Path) -> float:
    """Jobs per second between the first and the last result of a backlog of `jobs`."""
    image = fetch_photos(model_dir)["astronaut"].read_bytes()
    return await backlog_rate(url, function, image, jobs)


async def backlog_rate(url: str, function: str, image: bytes, jobs: int) -> float:
    """Jobs per second between the first and the last result of `jobs` jobs of `image`."""
    async with await SurgeClient.connect(url) as client:
        inbox = await client.inbox()
        ids = [
            await client.submit(image, function=function, reply_to=inbox.subject)
            for _ in range(jobs)
        ]
        await inbox.wait(ids, timeout=900)
        times = sorted(inbox.received_at.values())
        await inbox.close()
    return (len(times) - 1) / (times[-1] - times[0])


async def surge_message_path(
    url: str, count: int, logs: Path, env: dict[str, str], timeout: float = 300
) -> tuple[LoopRate, WorkerProcess]:
    """Jobs/s (and CPU per job) of a `tiny` worker process draining a backlog of `count`
    jobs published before it started; returns the still running worker for the latency
    figure."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, WorkerSettings())
    inbox = nc.new_inbox()
    worker = WorkerProcess(url, "tiny", logs / "tiny.log", env)
    try:
        probe = CpuProbe()
        async with ReplyCollector(nc, inbox, count, probe) as replies:
            subject = job_subject(Priority.NORMAL, "tiny")
            await publish_backlog(js, subject, count, tiny_png(), inbox, "mp")
            worker.start()
            assert worker.proc is not None
            probe.pid = worker.proc.pid
            await replies.wait(timeout)
            return LoopRate(replies.rate(), probe.us_per_job(count - 1)), worker
    except BaseException:
        worker.stop()
        raise
    finally:
        await nc.drain()


async def surge_round_trips(
    url: str, count: int, payload: bytes, auth: NatsAuth | None = None
) -> list[float]:
    """Milliseconds from publish to result, one `tiny` job at a time (`SurgeClient.call`)."""
    async with await SurgeClient.connect(url, auth) as client:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            await client.call(payload, function="tiny", timeout=10)
            times.append((time.perf_counter() - start) * 1000)
    return times
