"""Three nats-server nodes on loopback: replicated streams, and the queue surviving a node."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.errors import NotFoundError

from function.client import SurgeClient
from function.contract.settings import (
    ADVISORIES_STREAM,
    DEAD_STREAM,
    JOBS_STREAM,
    OBJECT_STORE_BUCKET,
    RESULTS_STREAM,
    Priority,
    WorkerSettings,
    consumer_name,
    servers_from,
)
from function.local.nats_cluster import EmbeddedCluster
from function.local.nats_server import free_port
from function.transport.topology import ensure_topology
from loadgen.run.failover import failover, longest_gap
from tests.helpers import png_bytes
from tests.scaler.test_cli import stop, surge

pytestmark = pytest.mark.timeout(60)

STREAMS = (JOBS_STREAM, RESULTS_STREAM, DEAD_STREAM, ADVISORIES_STREAM)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(3, store_dir=tmp_path / "cluster", max_payload=1024 * 1024) as nodes:
        yield nodes


def test_servers_from_splits_a_comma_separated_url() -> None:
    assert servers_from("nats://a:1") == ["nats://a:1"]
    assert servers_from(" nats://a:1, nats://b:2 ,") == ["nats://a:1", "nats://b:2"]


def test_longest_gap_counts_only_gaps_ending_after_the_kill() -> None:
    assert longest_gap([0.0, 5.0, 6.0, 7.5], since=5.5) == pytest.approx(1.5)
    assert longest_gap([0.0, 5.0, 6.0, 7.5], since=4.0) == pytest.approx(5.0)
    assert longest_gap([1.0], since=0.0) == 0.0


async def test_streams_bucket_and_consumers_have_three_replicas(
    cluster: EmbeddedCluster, model_dir: Path
) -> None:
    assert len(cluster.urls) == 3 and cluster.url == ",".join(cluster.urls)
    settings = WorkerSettings(
        nats_url=cluster.url, model_dir=model_dir, function="tiny", stream_replicas=3
    )
    nc = await nats.connect(servers_from(settings.nats_url))
    try:
        js = nc.jetstream()
        await ensure_topology(js, settings)
        for name in (*STREAMS, f"OBJ_{OBJECT_STORE_BUCKET}"):
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None and info.cluster.leader in cluster.names
            assert len(info.cluster.replicas or []) == 2, name
        for priority in Priority:
            consumer = await js.consumer_info(JOBS_STREAM, consumer_name("tiny", priority))
            assert consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2
        # a node that is neither the leader nor this client's goes away: writes still work
        leader = (await js.stream_info(JOBS_STREAM)).cluster
        assert leader is not None and nc.connected_url is not None
        ours = [node.port for node in cluster.nodes].index(nc.connected_url.port or 0)
        follower = next(i for i, n in enumerate(cluster.names) if n != leader.leader and i != ours)
        cluster.kill(follower)
        async with SurgeClient(nc) as client:
            await client.submit(png_bytes(), function="tiny", job_id="while-one-is-down")
        cluster.restart(follower)
        assert (await js.stream_info(JOBS_STREAM)).state.messages == 1
    finally:
        await nc.close()


@pytest.mark.slow
async def test_no_job_lost_or_answered_twice_when_the_jobs_leader_is_killed(
    model_dir: Path, tmp_path: Path
) -> None:
    """The worker, the client and SURGE_JOBS's leader share a node; SIGKILL it mid-load."""
    report = await failover(model_dir, jobs=200, rate=25.0, kill_after_s=2.0, store=tmp_path)
    summary = "\n".join(report.lines())
    print("\n" + summary)
    assert report.killed, summary
    assert report.accounting.scheduled == report.accounting.published == 200, summary
    assert report.lost == 0, f"{summary}\nmissing: {report.accounting.missing_ids}"
    assert report.twice == 0, summary
    # every job's ok result pushed, or (its client reconnecting) fetched from the store
    assert report.accounting.answered_ok + report.fetched == report.stored_ok == 200, summary
    assert report.settled, summary  # nothing left in SURGE_JOBS or waiting for an ack
    assert report.reconnects >= 2, summary  # the worker and the client both moved node
    assert 0 < report.pause_s < 20, summary


def _consecutive_free_ports(count: int) -> int:
    for _ in range(50):
        base = free_port()
        try:
            socks = []
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


async def test_surge_up_cluster_runs_workers_on_replicated_streams(
    tmp_path: Path, model_dir: Path
) -> None:
    port = _consecutive_free_ports(3)
    args = ["up", "-f", "tiny", "--cluster", "3", "--port", str(port), "--max-workers", "1"]
    args += ["--store-dir", str(tmp_path / "nats"), "--log-dir", str(tmp_path / "logs")]
    process = surge(*args, env={"SURGE_MODEL_DIR": str(model_dir)}, log=tmp_path / "up.log")
    try:
        url = ",".join(f"nats://127.0.0.1:{port + i}" for i in range(3))
        deadline = time.monotonic() + 30
        while True:
            try:
                client = await SurgeClient.connect(url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        async with client:
            # The scaler makes the streams (R3). A client that found none would make them
            # itself with its own settings, so wait for the scaler's first.
            while True:
                try:
                    await client.js.stream_info(JOBS_STREAM)
                    break
                except (NotFoundError, TimeoutError, nats.errors.Error):  # not yet, or electing
                    assert time.monotonic() < deadline + 30, "the scaler made no streams"
                    await asyncio.sleep(0.3)
            inbox = await client.inbox()
            job_id = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
            results = await inbox.wait([job_id], timeout=40)
            assert results[job_id].status.value == "ok"
            # streams made by the scaler; the bucket by the worker (SURGE_STREAM_REPLICAS=3)
            for name in (*STREAMS, f"OBJ_{OBJECT_STORE_BUCKET}"):
                assert (await client.js.stream_info(name)).config.num_replicas == 3, name
            await inbox.close()
    finally:
        assert stop(process) == 0
