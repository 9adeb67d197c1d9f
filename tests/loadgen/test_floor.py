"""The round-trip floor: a bare job with Surge's guarantees, on a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from function.local.nats_server import EmbeddedNats
from loadgen.bench.baselines import BARE_STREAM
from loadgen.bench.floor import FLOOR_STREAMS, bare_floor_loop, bare_job_round_trips

pytestmark = pytest.mark.timeout(60)


async def test_each_job_is_stored_answered_and_acked_then_the_streams_go(
    nats_server: EmbeddedNats,
) -> None:
    times = await bare_job_round_trips(nats_server.url, 20, b"job", result_size=400)
    assert len(times) == 20 and all(0 < t < 5000 for t in times)
    nc = await nats.connect(nats_server.url)
    try:
        names = [info.config.name for info in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert not set(FLOOR_STREAMS) & set(names)


async def test_streams_left_by_a_run_cut_short_are_replaced(nats_server: EmbeddedNats) -> None:
    await bare_job_round_trips(nats_server.url, 2, b"job", result_size=10)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(name=FLOOR_STREAMS[0], subjects=["bench.floor.jobs"])
    finally:
        await nc.close()
    assert len(await bare_job_round_trips(nats_server.url, 2, b"job", result_size=10)) == 2


async def test_the_floor_loop_publishes_a_result_per_job_on_its_own_subject_and_leaves_no_stream(
    nats_server: EmbeddedNats,
) -> None:
    nc = await nats.connect(nats_server.url)
    stored: list[str] = []

    async def on_result(msg: Msg) -> None:
        stored.append(msg.subject)

    try:
        await nc.subscribe("bench.floor.results.*", cb=on_result)
        rate = await bare_floor_loop(nats_server.url, 40, b"job", batch=8, result_size=300)
        await nc.flush()
        names = [info.config.name for info in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert rate.jobs_s > 0 and rate.cpu_us_per_job is not None and rate.cpu_us_per_job > 0
    assert len(set(stored)) == 40  # a stored result per job, each on its own subject
    assert not ({BARE_STREAM, *FLOOR_STREAMS} & set(names))  # nothing left behind


async def test_a_bare_loop_that_times_out_is_killed_and_its_stream_goes(
    nats_server: EmbeddedNats,
) -> None:
    from loadgen.bench.baselines import PULL_LOOP, bare_pull_loop

    never_replies = PULL_LOOP.format(settle="\n        await asyncio.sleep(3600)")
    started: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def watched(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        started.append(await spawn(*args, **kwargs))
        return started[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "create_subprocess_exec", watched)
        with pytest.raises(TimeoutError):
            await bare_pull_loop(
                nats_server.url, 3, b"job", 1, 10, timeout=1.0, script=never_replies
            )
    assert started and started[0].returncode is not None  # killed, not left running
    nc = await nats.connect(nats_server.url)
    try:
        names = [info.config.name for info in await nc.jetstream().streams_info()]
    finally:
        await nc.close()
    assert BARE_STREAM not in names
