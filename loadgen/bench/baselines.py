"""Bare baselines for `make bench`: what the same work costs without Surge.

* raw ONNX Runtime `run()` on preprocessed inputs (compute);
* a bare process: session create + one inference (cold start, memory);
* a bare nats-py request/reply (latency);
* a bare nats-py loop on a JetStream pull consumer: fetch, publish a result, ack
  (message path).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import nats
import psutil
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from function.contract.nats_auth import NatsAuth
from function.contract.parse import job_headers
from function.models import fetch_photos, load_model, load_task
from function.models.imaging import decode_image
from function.transport.connect import connect_options

__all__ = [
    "BARE_CONSUMER",
    "BARE_STREAM",
    "PULL_LOOP",
    "CpuProbe",
    "LoopRate",
    "ReplyCollector",
    "bare_cold_start",
    "bare_figures",
    "bare_pull_loop",
    "bare_request_reply",
    "publish_backlog",
    "raw_throughput",
]

BARE_STREAM = "BENCH_BARE"
BARE_SUBJECT = "bench.bare.jobs"
BARE_CONSUMER = "bench-bare"

_START = """
import os, time
from pathlib import Path
def process_start_time():
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    boot = next(float(l.split()[1]) for l in Path("/proc/stat").read_text().splitlines()
                if l.startswith("btime"))
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
"""

BARE_SESSION = (
    _START
    + """
import sys
from function.models import load_model, load_task
task = load_task(sys.argv[1])
model = load_model(task, cache_dir=Path(sys.argv[2]), intra_op_threads=int(sys.argv[3]))
model.warmup([1])
elapsed = time.time() - process_start_time()
for _ in range(int(sys.argv[4])):  # steady state: ORT plans its memory on the second run
    model.warmup([1])
import psutil
print("bare-session", elapsed, psutil.Process().memory_info().rss)
"""
)

# A bare loop on a JetStream pull consumer, in its own process: fetch up to `batch` jobs,
# run `settle` on them (a newline, then statements using `msgs`, `nc`, `js`, `body` and
# `args`, the arguments after the usual six), until `count` are done.
PULL_LOOP = """
import asyncio, sys
import nats

async def main(url, stream, consumer, count, batch, size, *args):
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=consumer, stream=stream)
    body, done = b"x" * size, 0
    while done < count:
        try:
            msgs = await sub.fetch(batch, timeout=1)
        except TimeoutError:
            continue{settle}
        done += len(msgs)
    await nc.drain()

url, stream, consumer, count, batch, size, *args = sys.argv[1:]
asyncio.run(main(url, stream, consumer, int(count), int(batch), int(size), *args))
"""

# The message path's baseline: reply, ack (not awaited); nothing stored.
BARE_LOOP = PULL_LOOP.format(
    settle="""
        for msg in msgs:
            await nc.publish(msg.headers["Surge-Reply-To"], body)
            await msg.ack()"""
)


def raw_throughput(
    function: str, batch: int, threads: int, seconds: float, model_dir: Path
) -> float:
    """Images per second from `run()` alone on preprocessed inputs."""
    task = load_task(function)
    model = load_model(task, cache_dir=model_dir, intra_op_threads=threads)
    photo = fetch_photos(model_dir)["astronaut"].read_bytes()
    samples = [task.preprocess(decode_image(photo, None, max_pixels=10**8))] * batch
    model.run_batch(samples)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run_batch(samples)
        done += batch
    return done / (time.perf_counter() - start)


def bare_cold_start(function: str, threads: int, model_dir: Path) -> tuple[float, int]:
    """A bare process: (seconds from process start to session + one inference, rss bytes)."""
    out = subprocess.run(
        [sys.executable, "-c", BARE_SESSION, function, str(model_dir), str(threads), "5"],
        capture_output=True,
        text=True,
        check=True,
    )
    return bare_figures(out.stdout)


def bare_figures(stdout: str) -> tuple[float, int]:
    """(seconds, rss bytes) from the bare session's own line: a GPU session's libraries
    print on stdout too."""
    marker = "bare-session "
    line = next((x for x in stdout.splitlines() if marker in x), None)
    if line is None:
        raise RuntimeError(f"the bare session printed no figures: {stdout[-500:]!r}")
    _, elapsed, rss = line[line.index(marker) :].split()[:3]
    return float(elapsed), int(rss)


async def bare_request_reply(
    url: str, count: int, payload: bytes, auth: NatsAuth | None = None
) -> list[float]:
    """Round trips (ms) of a nats-py request to an echo responder in the same process."""
    nc = await nats.connect(url, **connect_options(auth or NatsAuth()))

    async def echo(msg: Msg) -> None:
        await msg.respond(b'{"status":"ok"}')

    await nc.subscribe("bench.echo", cb=echo)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await nc.request("bench.echo", payload, timeout=5)
        times.append((time.perf_counter() - start) * 1000)
    await nc.drain()
    return times


async def publish_backlog(
    js: JetStreamContext, subject: str, count: int, payload: bytes, reply_to: str, prefix: str
) -> None:
    """Publish `count` jobs (awaiting JetStream's acks in chunks) before anyone consumes.
    Ids are unique per call: JetStream would drop a repeated id inside its window."""
    prefix = f"{prefix}-{uuid.uuid4().hex[:8]}"
    for start in range(0, count, 256):
        await asyncio.gather(
            *(
                js.publish(
                    subject,
                    payload,
                    headers=job_headers(
                        f"{prefix}-{i}", content_type="image/png", reply_to=reply_to
                    ),
                )
                for i in range(start, min(start + 256, count))
            )
        )


class CpuProbe:
    """CPU seconds (user + system) process `pid` spends between `start()` and `stop()`,
    per job: robust where wall-clock rates on a shared machine are not."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self._start: float | None = None
        self.seconds: float | None = None

    def _cpu(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        with contextlib.suppress(psutil.Error, ValueError):
            self._start = self._cpu()

    def stop(self) -> None:
        if self._start is not None:
            with contextlib.suppress(psutil.Error, ValueError):
                self.seconds = self._cpu() - self._start

    def us_per_job(self, jobs: int) -> float | None:
        """Microseconds per job, for `jobs` answered between the marks."""
        return self.seconds * 1e6 / jobs if self.seconds is not None and jobs > 0 else None


class ReplyCollector:
    """Receive times of the first `count` messages on `subject`; `rate()` after `wait()`.
    A `probe` measures a process's CPU from the first message to the last."""

    def __init__(self, nc: NATS, subject: str, count: int, probe: CpuProbe | None = None) -> None:
        self._nc, self.subject, self.count = nc, subject, count
        self.probe = probe
        self.times: list[float] = []
        self._done = asyncio.Event()

    async def __aenter__(self) -> ReplyCollector:
        async def on_msg(msg: Msg) -> None:
            self.times.append(time.perf_counter())
            if self.probe is not None and len(self.times) == 1:
                self.probe.start()
            if len(self.times) >= self.count:
                if self.probe is not None and len(self.times) == self.count:
                    self.probe.stop()
                self._done.set()

        self._sub = await self._nc.subscribe(self.subject, cb=on_msg)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(self._done.wait(), timeout)

    def rate(self) -> float:
        """Messages per second between the first and the last."""
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class LoopRate(NamedTuple):
    """A consumer's jobs/s, and its CPU microseconds per job (None if not measured)."""

    jobs_s: float
    cpu_us_per_job: float | None


async def bare_pull_loop(
    url: str,
    count: int,
    payload: bytes,
    batch: int,
    result_size: int,
    timeout: float = 300,
    *,
    script: str = BARE_LOOP,
    extra_args: Sequence[str] = (),
) -> LoopRate:
    """Jobs/s (and CPU per job) of a bare fetch + publish + ack loop (own process)
    draining `count` jobs; `script` (given `extra_args` after the usual six) replaces
    the loop, e.g. with one that keeps Surge's guarantees (`loadgen.bench.floor`)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):  # left by a run cut short, jobs and all
        await js.delete_stream(BARE_STREAM)
    await js.add_stream(
        StreamConfig(
            name=BARE_STREAM, subjects=[BARE_SUBJECT], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_consumer(
        BARE_STREAM,
        ConsumerConfig(
            durable_name=BARE_CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=256
        ),
    )
    inbox = nc.new_inbox()
    proc: asyncio.subprocess.Process | None = None
    try:
        probe = CpuProbe()
        async with ReplyCollector(nc, inbox, count, probe) as replies:
            await publish_backlog(js, BARE_SUBJECT, count, payload, inbox, "bare")
            args = [url, BARE_STREAM, BARE_CONSUMER, str(count), str(batch), str(result_size)]
            args += extra_args
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, *args)
            probe.pid = proc.pid
            await replies.wait(timeout)
            await proc.wait()
            return LoopRate(replies.rate(), probe.us_per_job(count - 1))
    finally:
        if proc is not None and proc.returncode is None:  # timed out: it must not linger
            proc.kill()
            await proc.wait()
        await js.delete_stream(BARE_STREAM)
        await nc.drain()
