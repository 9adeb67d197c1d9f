"""Failover under load: SIGKILL the SURGE_JOBS stream leader of a 3-node cluster.

    python -m loadgen.run.failover --jobs 200 --rate 20 --kill-after 3

Starts a loopback `EmbeddedCluster`, an in-process `tiny` worker whose streams have one
replica per node, and a client connected to every node; publishes jobs at a steady rate
(a publish that fails during the election is retried with the same job id, so JetStream
drops a duplicate) and, `kill_after_s` into the run, SIGKILLs the node leading
SURGE_JOBS. Prints jobs published / answered / lost / answered twice, the results stored,
and the pause: the longest gap between consecutive results from the kill on. The baseline,
in the same run, is the same schedule and kill against a bare 3-replica stream (JetStream's
own re-election, no worker): the longest gap between stored publishes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from function.client import SurgeClient
from function.contract.settings import JOBS_STREAM, Header, WorkerSettings
from function.local.nats_cluster import EmbeddedCluster
from function.worker import Worker
from loadgen.run.ledger import Ledger
from loadgen.run.monitor import BacklogProbe
from loadgen.run.records import Accounting
from loadgen.run.runner import tiny_png

__all__ = [
    "FailoverReport",
    "bare_failover",
    "failover",
    "lead_from",
    "longest_gap",
    "main",
    "run_failover",
]

STEPDOWN_PREFIX = "$JS.API.STREAM.LEADER.STEPDOWN"
BARE_STREAM = "FAILOVER_BARE"

_RETRYABLE = (nats.errors.Error, TimeoutError)


@dataclass
class FailoverReport:
    """What one failover run saw; `pause_s` is the longest result gap from the kill on."""

    accounting: Accounting
    stored_ok: int
    killed: str
    pause_s: float
    publish_retries: int
    longest_publish_s: float
    settled: bool
    elapsed_s: float
    reconnects: int = 0
    fetched: int = 0
    """Jobs whose reply never came (a client reconnecting misses core NATS messages) but
    whose result was in the store, where `SurgeClient` looks for a missing reply."""

    @property
    def lost(self) -> int:
        """Jobs without a result, pushed or stored."""
        return self.accounting.lost - self.fetched

    @property
    def twice(self) -> int:
        """Extra results pushed for jobs already answered."""
        return self.accounting.duplicate_results

    def lines(self) -> list[str]:
        """The report as three short lines."""
        a = self.accounting
        return [
            f"jobs {a.scheduled}: published {a.published}, answered {a.answered} "
            f"(ok {a.answered_ok}; {self.fetched} more from the store), lost {self.lost}, "
            f"answered twice {self.twice}, stored ok {self.stored_ok}",
            f"killed {self.killed} (SURGE_JOBS leader); failover pause {self.pause_s:.2f}s "
            f"(longest gap between results from the kill on)",
            f"publish retries {self.publish_retries}, longest publish "
            f"{self.longest_publish_s:.2f}s; reconnects {self.reconnects}; "
            f"queue settled {self.settled}; run {self.elapsed_s:.1f}s",
        ]


def longest_gap(arrivals: list[float], since: float) -> float:
    """The longest gap between consecutive arrivals that ends after `since`."""
    times = sorted(arrivals)
    return max((b - a for a, b in itertools.pairwise(times) if b > since), default=0.0)


Send = Callable[[int], Awaitable[object]]


@dataclass
class _Load:
    """One scheduled load with a kill: when each publish was stored (NaN: never)."""

    stored_at: list[float]
    retries: int
    longest_publish_s: float
    killed: str
    killed_at: float


async def _retry(send: Send, index: int, give_up: float) -> tuple[float, int, float]:
    """`send(index)` until it succeeds or `give_up` passes; (stored at, retries, seconds)."""
    started, retries = time.monotonic(), 0
    while True:
        try:
            await send(index)
        except _RETRYABLE:
            if time.monotonic() > give_up:
                return math.nan, retries, time.monotonic() - started
            retries += 1
            await asyncio.sleep(0.1)
        else:
            done = time.monotonic()
            return done, retries, done - started


async def _kill_leader(
    cluster: EmbeddedCluster, js: JetStreamContext, stream: str, after_s: float
) -> tuple[str, float]:
    """After `after_s`, SIGKILL the node leading `stream`; (its name, when)."""
    await asyncio.sleep(after_s)
    while True:
        with contextlib.suppress(*_RETRYABLE):
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader:
                leader = info.cluster.leader
                break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(cluster.kill, cluster.index_of(leader))
    return leader, time.monotonic()


async def _load_and_kill(
    cluster: EmbeddedCluster,
    js: JetStreamContext,
    stream: str,
    send: Send,
    schedule: list[float],
    kill_after_s: float,
    give_up: float,
) -> _Load:
    """Call `send(i)` at `schedule[i]` (retrying), and kill `stream`'s leader meanwhile."""
    kill = asyncio.create_task(_kill_leader(cluster, js, stream, kill_after_s))
    tasks = []
    for index, at in enumerate(schedule):
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tasks.append(asyncio.create_task(_retry(send, index, give_up)))
    outcomes = await asyncio.gather(*tasks)
    killed, killed_at = await kill
    return _Load(
        stored_at=[at for at, _, _ in outcomes],
        retries=sum(retries for _, retries, _ in outcomes),
        longest_publish_s=max((took for _, _, took in outcomes), default=0.0),
        killed=killed,
        killed_at=killed_at,
    )


async def run_failover(
    cluster: EmbeddedCluster,
    client: SurgeClient,
    *,
    jobs: int = 200,
    rate: float = 20.0,
    kill_after_s: float = 3.0,
    wait_s: float = 30.0,
) -> FailoverReport:
    """Publish `jobs` `tiny` jobs at `rate`/s, kill the SURGE_JOBS leader mid-run, count."""
    ledger = Ledger(f"fo-{uuid.uuid4().hex[:8]}")
    arrived = asyncio.Event()

    async def on_result(msg: Msg) -> None:
        index = ledger.index((msg.headers or {}).get(Header.JOB_ID, ""))
        if index is not None:
            ledger.on_result(index, time.monotonic(), msg)
            arrived.set()

    reply_to = client.nc.new_inbox()
    sub = await client.nc.subscribe(reply_to, cb=on_result)
    await client.nc.flush()
    start = time.monotonic()
    give_up = start + jobs / rate + wait_s
    for n in range(jobs):
        ledger.add(start + n / rate)
    image = tiny_png()

    async def submit(index: int) -> str:
        job_id = ledger.job_id(index)
        return await client.submit(image, function="tiny", job_id=job_id, reply_to=reply_to)

    load = await _load_and_kill(
        cluster, client.js, JOBS_STREAM, submit, ledger.scheduled, kill_after_s, give_up
    )
    for index, stored_at in enumerate(load.stored_at):
        if math.isnan(stored_at):
            ledger.rejected[index] = "publish_failed"
        ledger.sent[index] = stored_at
    probe = BacklogProbe(client.js, "tiny")
    while time.monotonic() < give_up and (ledger.unanswered() or await probe.backlog() != 0):
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 0.5)
    settled = await probe.backlog() == 0
    await sub.unsubscribe()
    elapsed = time.monotonic() - start
    stored = [await client.result(ledger.job_id(i)) for i in range(jobs)]
    unanswered = set(ledger.unanswered())
    return FailoverReport(
        fetched=sum(stored[i] is not None for i in unanswered),
        accounting=ledger.accounting(),
        stored_ok=sum(r is not None and r.status.value == "ok" for r in stored),
        killed=load.killed,
        pause_s=longest_gap([t for t in ledger.answered if not math.isnan(t)], load.killed_at),
        publish_retries=load.retries,
        longest_publish_s=load.longest_publish_s,
        settled=settled,
        elapsed_s=elapsed,
    )


async def lead_from(nc: NATS, stream: str, server: str, timeout: float = 10.0) -> bool:
    """Move `stream`'s leader to `server` (step-down, preferred placement); True once there."""
    request = json.dumps({"placement": {"preferred": server}}).encode()
    deadline = time.monotonic() + timeout
    js = nc.jetstream()
    while time.monotonic() < deadline:
        with contextlib.suppress(*_RETRYABLE):
            info = await js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader == server:
                return True
            await nc.request(f"{STEPDOWN_PREFIX}.{stream}", request, timeout=2.0)
        await asyncio.sleep(0.2)
    return False


async def _connect_home(cluster: EmbeddedCluster, home: NATS, stream: str) -> NATS:
    """Lead `stream` from `home`'s node; a connection to every node, `home`'s first."""
    assert home.connected_url is not None
    index = [node.port for node in cluster.nodes].index(home.connected_url.port or 0)
    await lead_from(home, stream, cluster.names[index])
    urls = [cluster.urls[index], *(u for i, u in enumerate(cluster.urls) if i != index)]
    return await nats.connect(urls, dont_randomize=True, name="surge-failover")


async def failover(
    model_dir: Path, jobs: int, rate: float, kill_after_s: float, store: Path
) -> FailoverReport:
    """A 3-node cluster and a `tiny` worker with 3 stream replicas; the worker, the client
    and the SURGE_JOBS leader all on one node (the worst case), then `run_failover`."""
    with EmbeddedCluster(3, store_dir=store) as cluster:
        settings = WorkerSettings(
            nats_url=cluster.url,
            function="tiny",
            model_dir=model_dir,
            stream_replicas=3,
            ack_wait_s=10.0,
            fetch_timeout_s=0.5,
            heartbeat_interval_s=0.5,
        )
        worker = Worker(settings)
        await worker.start()
        try:
            assert worker.nc is not None
            nc = await _connect_home(cluster, worker.nc, JOBS_STREAM)
            async with SurgeClient(nc, own_connection=True) as client:
                report = await run_failover(
                    cluster, client, jobs=jobs, rate=rate, kill_after_s=kill_after_s
                )
                report.reconnects = nc.stats["reconnects"] + worker.nc.stats["reconnects"]
                return report
        finally:
            await worker.stop(timeout=10)


async def bare_failover(jobs: int, rate: float, kill_after_s: float, store: Path) -> float:
    """The baseline: the same schedule and kill on a bare 3-replica stream (no worker,
    the publisher on the leader's node); the longest gap between stored publishes."""
    with EmbeddedCluster(3, store_dir=store) as cluster:
        first = await nats.connect(cluster.urls)
        await first.jetstream().add_stream(name=BARE_STREAM, subjects=["bare"], num_replicas=3)
        nc = await _connect_home(cluster, first, BARE_STREAM)
        await first.close()
        js = nc.jetstream()

        async def publish(index: int) -> object:
            return await js.publish("bare", b"x", headers={Header.MSG_ID: f"bare-{index}"})

        start = time.monotonic()
        schedule = [start + n / rate for n in range(jobs)]
        give_up = start + jobs / rate + 30.0
        load = await _load_and_kill(
            cluster, js, BARE_STREAM, publish, schedule, kill_after_s, give_up
        )
        await nc.close()
    stored = [t for t in load.stored_at if not math.isnan(t)]
    return longest_gap(stored, load.killed_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--kill-after", type=float, default=3.0)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the bare stream run.")
    args = parser.parse_args()
    model_dir = WorkerSettings().model_dir.resolve()
    with tempfile.TemporaryDirectory(prefix="surge-failover-") as store:
        report = asyncio.run(
            failover(model_dir, args.jobs, args.rate, args.kill_after, Path(store) / "surge")
        )
        for line in report.lines():
            print(line)
        if not args.no_baseline:
            bare = asyncio.run(
                bare_failover(args.jobs, args.rate, args.kill_after, Path(store) / "bare")
            )
            ratio = f"{report.pause_s / bare:.2f}x" if bare else "n/a"
            print(
                f"baseline: bare 3-replica stream, same schedule and kill: pause {bare:.2f}s; "
                f"Surge / bare {ratio}"
            )
    raise SystemExit(0 if report.lost == 0 and report.twice == 0 else 1)


if __name__ == "__main__":
    main()
