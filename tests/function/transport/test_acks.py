"""`StreamWrites` against a real nats-server: writes stored, refused or unanswered, and acks
confirmed, each batch in one wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from function.local.nats_server import EmbeddedNats
from function.transport.acks import StreamWrites


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    connection = await nats.connect(nats_server.url)
    await connection.jetstream().add_stream(
        StreamConfig(
            name="ACKS",
            subjects=["acks.>"],
            max_msgs=2,
            discard=DiscardPolicy.NEW,
            max_msg_size=64,
        )
    )
    yield connection
    await connection.close()


async def test_a_batch_of_writes_settles_each_on_its_own(nc: NATS) -> None:
    writes = StreamWrites(nc)
    futures = [
        await writes.write("acks.one", b"1", {"Nats-Msg-Id": "one"}),
        await writes.write("acks.big", b"x" * 100, {}),  # over max_msg_size: refused
        await writes.write("nowhere.at.all", b"3", {}),  # no stream takes it
        await writes.write("acks.two", b"2", {}),
    ]
    outcomes = await writes.settle(futures, timeout=5)
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], APIError) and outcomes[1].err_code == 10054
    assert isinstance(outcomes[2], NoStreamResponseError)
    assert [await f for f in (futures[0], futures[3])] == [1, 2]  # stream sequences
    info = await nc.jetstream().stream_info("ACKS")
    assert info.state.messages == 2


async def test_a_refused_write_past_a_full_stream_is_an_error_not_a_hang(nc: NATS) -> None:
    writes = StreamWrites(nc)
    futures = [await writes.write(f"acks.{i}", b"x", {}) for i in range(3)]
    outcomes = await asyncio.wait_for(writes.settle(futures, timeout=5), 10)
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], APIError) and outcomes[2].err_code == 10077


async def test_an_unanswered_write_times_out_and_is_forgotten(nc: NATS) -> None:
    async def mute(msg: Msg) -> None:
        pass  # takes the write, never acknowledges it

    writes = StreamWrites(nc)
    await nc.subscribe("silent.subject", cb=mute)
    future = await writes.write("silent.subject", b"x", {})
    [outcome] = await writes.settle([future], timeout=0.2)
    assert isinstance(outcome, TimeoutError)
    assert future.cancelled() and not writes._waiting


async def test_acks_are_confirmed_together_and_a_gone_consumer_is_an_error(nc: NATS) -> None:
    js = nc.jetstream()
    for i in range(2):
        await js.publish(f"acks.{i}", b"x")
    sub = await js.pull_subscribe("acks.>", durable="acker")
    msgs = await sub.fetch(1, timeout=5)
    writes = StreamWrites(nc)
    outcomes = await writes.settle_all([writes.ack(msg) for msg in msgs], timeout=5)
    assert outcomes == [None]
    info = await js.consumer_info("ACKS", "acker")
    assert info.num_ack_pending == 0 and info.ack_floor.consumer_seq == 1
    [last] = await sub.fetch(1, timeout=5)
    await js.delete_consumer("ACKS", "acker")
    [outcome] = await writes.settle_all([writes.ack(last)], timeout=2)
    assert isinstance(outcome, NoRespondersError | TimeoutError)


async def test_a_write_that_cannot_be_sent_fails_alone(nc: NATS) -> None:
    writes = StreamWrites(nc)
    no_reply = Msg(nc, subject="acks.0", reply="", data=b"")
    outcomes = await writes.settle_all(
        [writes.write("acks.0", b"1", {}), writes.ack(no_reply)], timeout=5
    )
    assert outcomes[0] is None and isinstance(outcomes[1], ValueError)
