"""The round-trip floor: a bare job with Surge's guarantees, on a real nats-server."""

from __future__ import annotations

import nats
import pytest

from function.local.nats_server import EmbeddedNats
from loadgen.bench.floor import FLOOR_STREAMS, bare_job_round_trips

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
