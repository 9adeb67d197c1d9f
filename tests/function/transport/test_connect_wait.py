"""A first connection with no server: one line per attempt, a bounded wait, a clear end."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest

from function.contract.nats_auth import NatsAuth, NatsConnectError
from function.local.nats_server import EmbeddedNats, free_port
from function.transport.connect import (
    CONNECT_WAIT_ENV,
    NatsUnreachable,
    connect_wait_s,
    open_nats,
)
from function.transport.connection import ConnectionHealth


def test_the_default_wait_is_short_and_the_environment_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(CONNECT_WAIT_ENV, raising=False)
    assert connect_wait_s() == 3.0  # was 10 s for every command
    monkeypatch.setenv(CONNECT_WAIT_ENV, "inf")
    assert connect_wait_s() == float("inf")
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(CONNECT_WAIT_ENV, bad)
        with pytest.raises(NatsConnectError, match=CONNECT_WAIT_ENV):
            connect_wait_s()


async def test_each_failed_attempt_is_one_line_and_the_end_names_the_cause() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    lines: list[str | None] = []
    with pytest.raises(NatsUnreachable) as caught:
        await open_nats(url, NatsAuth(), name="t", wait_s=0.5, progress_cb=lines.append)
    assert (
        str(caught.value) == f"no NATS server answered at {url} within 0.5 s (connection refused)"
    )
    assert lines and all(isinstance(line, str) for line in lines)
    assert str(lines[0]).startswith(f"cannot reach NATS at {url} (connection refused); attempt 1")
    assert all("\n" not in str(line) for line in lines)


async def test_a_server_that_comes_up_later_is_waited_for(tmp_path: Path) -> None:
    """`--wait-for-nats`: attempts back off until the server listens, then connect."""
    port = free_port()
    lines: list[str | None] = []
    first_failure = asyncio.Event()

    def progress(line: str | None) -> None:
        lines.append(line)
        first_failure.set()

    connecting = asyncio.create_task(
        open_nats(f"nats://127.0.0.1:{port}", NatsAuth(), name="t", wait_s=60, progress_cb=progress)
    )
    await asyncio.wait_for(first_failure.wait(), 10)
    with EmbeddedNats(port=port, store_dir=tmp_path / "nats"):
        nc = await asyncio.wait_for(connecting, 30)
        assert nc.is_connected
        await nc.close()
    assert lines[0] is not None and lines[-1] is None  # failed attempts, then connected


async def test_the_worker_hears_each_attempt_as_a_readiness_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = ConnectionHealth()
    url = f"nats://127.0.0.1:{free_port()}"
    logger = logging.getLogger("surge.connection")
    logger.addHandler(caplog.handler)
    try:
        with pytest.raises(NatsUnreachable):
            await open_nats(url, NatsAuth(), name="t", wait_s=0.5, **health.callbacks())
    finally:
        logger.removeHandler(caplog.handler)
    assert health.trouble is not None and health.fatal is None
    assert health.trouble[0].startswith(f"cannot reach NATS at {url} (connection refused)")
    warnings = [r for r in caplog.records if r.name == "surge.connection"]
    assert warnings and all(r.levelno == logging.WARNING and not r.exc_info for r in warnings)
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        f"cannot reach NATS at {url} (connection refused)"
    ] * len(warnings)


async def test_a_cancel_that_nats_py_swallowed_still_stops_the_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import function.transport.connect as connect

    real = connect._connect_once

    async def swallowing(*args: object) -> object:
        try:
            await asyncio.sleep(0.5)  # a slow attempt: the cancel lands inside it
            return await real(*args)  # type: ignore[arg-type]
        except asyncio.CancelledError:  # as Python 3.11's wait_for can, inside nats-py
            return None, ConnectionRefusedError("cancelled"), []

    monkeypatch.setattr(connect, "_connect_once", swallowing)
    port = free_port()  # nothing listens: it would retry for ever
    task = asyncio.ensure_future(open_nats(f"nats://127.0.0.1:{port}", name="t", wait_s=math.inf))
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.wait({task}, timeout=10)
    stopped = task.done()
    if not stopped:  # still retrying: give it up, without waiting on it
        monkeypatch.setattr(connect, "_connect_once", real)
        task.cancel()
    assert stopped and task.cancelled()
