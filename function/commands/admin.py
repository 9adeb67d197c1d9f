"""Operators' commands on the server (`surge tenants ...`, `surge models ...`): run one
action on a fresh connection, and end whatever goes wrong as one line and exit status 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from function.contract.errors import SurgeError
from function.contract.nats_auth import NatsConnectError

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

__all__ = ["admin_call", "fail"]

T = TypeVar("T")


def fail(command: str, message: str) -> typer.Exit:
    """`surge <command>: <message>` on stderr; the caller raises the returned exit (1)."""
    typer.echo(f"surge {command}: {message}", err=True)
    return typer.Exit(1)


def admin_call(
    command: str, nats_url: str, action: Callable[[NATS], Awaitable[T]], *, who: str = ""
) -> T:
    """Run `action` on a connection to `nats_url` (credentials from the environment);
    `who` adds to the no-JetStream line who may use the command."""
    import nats.errors
    from nats.js.errors import APIError

    from function.transport.connect import open_nats

    async def run() -> T:
        nc = await open_nats(nats_url, name=f"surge-{command}", reconnect=False)
        try:
            return await action(nc)
        finally:
            await nc.close()

    try:
        return asyncio.run(run())
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        raise fail(
            command, f"no answer from JetStream at {nats_url}: is JetStream on{who}?"
        ) from None
    except APIError as exc:
        raise fail(command, f"the server refused: {exc.description or exc}") from None
    except NatsConnectError:
        raise  # `main` prints it (exit status 2), as for every command
    except SurgeError as exc:
        raise fail(command, str(exc)) from None
