"""Serve a `Function` with uvicorn: what `surge worker` runs.

`FunctionServer` is the ASGI app: lifespan startup calls `start()` (which returns at
once), lifespan shutdown awaits the drain, everything else goes to `handle`. uvicorn
turns SIGTERM into a graceful shutdown, so SIGTERM drains the NATS consumer too.

The HTTP port is `SURGE_HTTP_PORT` (or `--http-port`) when set, else `PORT` (which
Knative sets), else 8080.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from function.contract.settings import InvalidSettings, WorkerSettings
from function.eventloop import run_loop
from function.http.func import Function
from function.worker import check_startup

__all__ = ["FunctionServer", "http_port", "serve"]

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


_PORT = TypeAdapter(Annotated[int, Field(ge=1, le=65535)])


def http_port(settings: WorkerSettings, env: Mapping[str, str] = os.environ) -> int:
    """`SURGE_HTTP_PORT` if it was given, else Knative's `PORT`, else the default."""
    if "http_port" in settings.model_fields_set or "PORT" not in env:
        return settings.http_port
    try:
        return _PORT.validate_python(env["PORT"])
    except ValidationError as exc:
        raise InvalidSettings.of(exc, "PORT") from None


def serve(settings: WorkerSettings) -> None:
    """Run the function's HTTP server and NATS consumer until SIGTERM/SIGINT.

    Settings it cannot start with (an unknown function, a bad `PORT`) raise a
    `SurgeError` at once, before anything touches NATS. Exits with status 1 when the
    worker cannot recover (its NATS connection closed).
    """
    check_startup(settings)
    port = http_port(settings)
    fatal = run_loop(_serve(Function(settings), settings, port), settings.event_loop)
    if fatal:
        log.error("exiting: %s", fatal[0])
        raise SystemExit(1)


async def _serve(function: Function, settings: WorkerSettings, port: int) -> list[str]:
    """Start the function, then the HTTP server; the reasons it had to exit, if any."""
    fatal: list[str] = []
    servers: list[Any] = []

    def exit_fatal(reason: str) -> None:
        fatal.append(reason)
        for server in servers:
            server.should_exit = True

    function.on_fatal = exit_fatal
    function.start()  # the model starts loading, in its thread, and NATS connecting...
    await asyncio.sleep(0)
    import uvicorn  # ...while the HTTP stack is imported and built

    function.app  # noqa: B018 (made now, not at the first request)
    config = uvicorn.Config(
        FunctionServer(function),
        host=settings.http_host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
    server = uvicorn.Server(config)
    servers.append(server)
    if not fatal:
        await server.serve()
    else:
        await function.drain()
    return fatal
