"""A worker started before NATS: it retries, and readiness says why it is not ready."""

from __future__ import annotations

import asyncio
import logging

from function.contract.settings import WorkerSettings
from function.http.func import Function
from function.local.nats_server import free_port


async def test_readiness_names_the_unreachable_server_not_warming() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    attempted = asyncio.Event()

    class Attempts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("cannot reach NATS"):
                attempted.set()

    handler = Attempts()
    logger = logging.getLogger("surge.connection")
    logger.addHandler(handler)
    function = Function(WorkerSettings(nats_url=url, connect_wait_s=60))
    try:
        function.start()
        await asyncio.wait_for(attempted.wait(), 10)
        ready, message = function.ready()
        assert not ready
        assert message.startswith(f"cannot reach NATS at {url} (connection refused)"), message
        assert function.alive() == (True, "OK")  # a restart would not bring NATS back
    finally:
        logger.removeHandler(handler)
        await function.drain()
