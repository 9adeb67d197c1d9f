"""The worker's event loop: uvloop by default where installed, asyncio on request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from pydantic import ValidationError

from function.contract.settings import WorkerSettings
from function.eventloop import chosen_loop, run_loop


async def _loop_kind() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_picks_uvloop_where_it_is_installed() -> None:
    assert chosen_loop("auto") == "uvloop"
    assert issubclass(run_loop(_loop_kind()), uvloop.Loop)


def test_asyncio_keeps_the_standard_loop() -> None:
    kind = run_loop(_loop_kind(), "asyncio")
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)


def test_the_default_setting_is_auto_and_a_bad_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WorkerSettings().event_loop == "auto"
    monkeypatch.setenv("SURGE_EVENT_LOOP", "trio")
    with pytest.raises(
        ValidationError,
        match=r"SURGE_EVENT_LOOP 'trio': Input should be 'auto', 'uvloop' or 'asyncio'",
    ):
        WorkerSettings()
