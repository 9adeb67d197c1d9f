"""A worker that cannot load its model says so at once, even while NATS is unreachable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from function.contract.settings import WorkerSettings
from function.worker import Worker


async def test_a_model_that_cannot_load_fails_the_start_without_waiting_for_nats(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    settings = WorkerSettings(
        nats_url="nats://127.0.0.1:1",  # nothing listens; the worker would retry for ever
        function="tiny",
        model_dir=tmp_path,
        model_path=broken,
    )
    worker = Worker(settings)
    with pytest.raises(DecodeError, match="corrupt"):  # not a TimeoutError: no NATS wait
        await asyncio.wait_for(worker.start(), 30)
    assert worker.nc is None  # never connected
