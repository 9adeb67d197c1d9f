"""The floor of a job's round trip with Surge's guarantees, in bare nats-py.

A request/reply is one server round trip; a Surge job is three: the job is stored in a
work queue and delivered to a pulling worker, the result is stored (its acknowledgement
awaited) before the reply goes out, and the job is acked after. This baseline does just
that, with no decode, model or bookkeeping, so Surge's round trip can be read against
what its guarantees alone cost on the same machine and server.

`bare_floor_loop` is the same for throughput: a bare loop draining a backlog in batches
as a Surge worker does (results stored together, acknowledgements awaited; replies;
acks confirmed together), beside the message path's plain fetch + reply + ack loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from loadgen.bench.baselines import PULL_LOOP, LoopRate, bare_pull_loop

__all__ = ["FLOOR_STREAMS", "bare_floor_loop", "bare_job_round_trips"]

FLOOR_JOBS, FLOOR_RESULTS, FLOOR_CONSUMER = "BENCH_FLOOR_JOBS", "BENCH_FLOOR_RESULTS", "floor"
FLOOR_STREAMS = (FLOOR_JOBS, FLOOR_RESULTS)
_JOBS_SUBJECT, _RESULTS_PREFIX = "bench.floor.jobs", "bench.floor.results"

# The bare worker, in its own process like a Surge worker: pull one job, store its
# result (stream ack awaited), reply, ack (confirmed); "stop" ends it.
_RESPONDER = """
import asyncio, sys
import nats

async def main(url, stream, consumer, prefix, size):
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable=consumer, stream=stream)
    body = b"x" * size
    print("ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(1, timeout=5)
        except TimeoutError:
            continue
        for msg in msgs:
            if msg.data == b"stop":
                await msg.ack_sync()
                await nc.drain()
                return
            job_id = msg.headers["Nats-Msg-Id"]
            await js.publish(f"{prefix}.{job_id}", body, headers={"Nats-Msg-Id": job_id})
            await nc.publish(msg.headers["Surge-Reply-To"], body)
            await msg.ack_sync()

url, stream, consumer, prefix, size = sys.argv[1:6]
asyncio.run(main(url, stream, consumer, prefix, int(size)))
"""

# The bare loop with the guarantees, batch by batch as a worker settles them: every
# result stored (stream acks awaited together), then each reply, then every ack
# confirmed together.
_FLOOR_LOOP = PULL_LOOP.format(
    settle="""
        [prefix] = args
        ids = [msg.headers["Nats-Msg-Id"] for msg in msgs]
        await asyncio.gather(
            *(js.publish(f"{prefix}.{i}", body, headers={"Nats-Msg-Id": i}) for i in ids)
        )
        for msg in msgs:
            await nc.publish(msg.headers["Surge-Reply-To"], body)
        await asyncio.gather(*(msg.ack_sync() for msg in msgs))"""
)


async def _fresh_results_stream(js: JetStreamContext) -> None:
    """The floor's results stream, empty (one left by a run cut short is replaced)."""
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(FLOOR_RESULTS)
    await js.add_stream(
        StreamConfig(name=FLOOR_RESULTS, subjects=[f"{_RESULTS_PREFIX}.*"], max_msgs_per_subject=1)
    )


async def bare_floor_loop(
    url: str, count: int, payload: bytes, batch: int, result_size: int, timeout: float = 300
) -> LoopRate:
    """Jobs/s (and CPU per job) of a bare loop that keeps Surge's guarantees, draining
    `count` jobs in batches of up to `batch`: what they cost with no Surge code."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _fresh_results_stream(js)
    try:
        return await bare_pull_loop(
            url,
            count,
            payload,
            batch,
            result_size,
            timeout,
            script=_FLOOR_LOOP,
            extra_args=[_RESULTS_PREFIX],
        )
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(FLOOR_RESULTS)
        await nc.drain()


async def bare_job_round_trips(
    url: str, count: int, payload: bytes, result_size: int, timeout: float = 60
) -> list[float]:
    """Milliseconds from publishing a job to its reply, one at a time, through a bare
    worker process that keeps Surge's order: job stored, result stored, reply, ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):  # left by an earlier run that was cut short
        await js.delete_stream(FLOOR_JOBS)
    await js.add_stream(
        StreamConfig(
            name=FLOOR_JOBS, subjects=[_JOBS_SUBJECT], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await _fresh_results_stream(js)
    await js.add_consumer(
        FLOOR_JOBS, ConsumerConfig(durable_name=FLOOR_CONSUMER, ack_policy=AckPolicy.EXPLICIT)
    )
    args = [url, FLOOR_JOBS, FLOOR_CONSUMER, _RESULTS_PREFIX, str(result_size)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RESPONDER, *args, stdout=asyncio.subprocess.PIPE
    )
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    inbox = nc.new_inbox()

    async def on_reply(msg: Msg) -> None:
        replies.put_nowait(msg)

    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), timeout)
        await nc.subscribe(inbox, cb=on_reply)
        times = []
        for _ in range(count):
            headers = {"Nats-Msg-Id": uuid.uuid4().hex, "Surge-Reply-To": inbox}
            start = time.perf_counter()
            stored = asyncio.ensure_future(js.publish(_JOBS_SUBJECT, payload, headers=headers))
            await asyncio.wait_for(replies.get(), timeout)  # its stream ack alongside,
            await stored  # as `SurgeClient.call` does
            times.append((time.perf_counter() - start) * 1000)
        await js.publish(_JOBS_SUBJECT, b"stop")
        await asyncio.wait_for(proc.wait(), timeout)
        return times
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for name in FLOOR_STREAMS:
            await js.delete_stream(name)
        await nc.drain()
