"""Serve a `Function` with uvicorn: what `surge worker` runs.

`FunctionServer` is the ASGI app: lifespan startup calls `start()` (which returns at
once), lifespan shutdown awaits the drain, everything else goes to `handle`. uvicorn
turns SIGTERM into a graceful shutdown, so SIGTERM drains the NATS consumer too.
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from function.contract.settings import WorkerSettings
from function.http.func import Function

__all__ = ["FunctionServer", "serve"]

log = logging.getLogger("surge.serve")


class FunctionServer:
    """ASGI wrapper giving a `Function` an awaited drain on lifespan shutdown."""

    def __init__(self, function: Function, cfg: dict[str, str] | None = None) -> None:
        self.function = function
        self.cfg = cfg

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.function.handle(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.function.start(self.cfg)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.function.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return


def serve(settings: WorkerSettings) -> None:
    """Run the function's HTTP server and NATS consumer until SIGTERM/SIGINT.

    Exits with status 1 when the worker cannot recover (its NATS connection closed).
    """
    function = Function(settings)
    config = uvicorn.Config(
        FunctionServer(function),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
    server = uvicorn.Server(config)
    fatal: list[str] = []

    def exit_fatal(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    function.on_fatal = exit_fatal
    server.run()
    if fatal:
        log.error("exiting: %s", fatal[0])
        raise SystemExit(1)
