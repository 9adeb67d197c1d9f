"""The round-trip floor: a bare job with Surge's guarantees, on a real nats-server."""

from __future__ import annotations

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


async def test_the_floor_loop_stores_a_result_per_job_and_leaves_no_stream_behind(
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
