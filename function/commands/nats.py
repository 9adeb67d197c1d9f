"""`surge nats`: the real nats-server on loopback for development (one node or a cluster).

surge nats                                  JetStream on 127.0.0.1:4222
surge nats --cluster 3                      three nodes on 4222..4224, streams replicated
surge nats --secure --tenants acme,globex   mutual TLS, a trusted user, and a NATS user
                                            and a job stream per tenant
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from function.commands.tenants import check_secure_flags, parse_tenants, tenants_connect
from function.contract.settings import WorkerSettings

if TYPE_CHECKING:
    from function.local.secure_stack import SecureStack

__all__ = ["nats_command"]

console = Console(stderr=True)


def nats_command(
    port: Annotated[int, typer.Option(help="Client port.")] = 4222,
    monitor_port: Annotated[int, typer.Option(help="HTTP monitoring port.")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store.")] = Path(".cache/surge/nats"),
    cluster: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="Nodes: N > 1 runs a loopback cluster on ports port..port+N-1."
        ),
    ] = 1,
    cluster_port: Annotated[int, typer.Option(help="First route port of a cluster.")] = 6222,
    secure: Annotated[
        bool,
        typer.Option(
            help="Mutual TLS and a password, with throw-away keys and certificates made in "
            "--secrets-dir (one node); prints the SURGE_NATS_* settings clients need."
        ),
    ] = False,
    secrets_dir: Annotated[
        Path, typer.Option(help="Where --secure keeps its keys, certificates and password.")
    ] = Path(".cache/surge/secure"),
    tenants: Annotated[
        list[str] | None,
        typer.Option(
            "--tenants",
            help="With --secure: a NATS user and a job stream for each tenant "
            "(comma-separated), with the permissions that keep tenants apart.",
        ),
    ] = None,
) -> None:
    """Run nats-server with JetStream on 127.0.0.1 (or a cluster of N) until Ctrl-C/SIGTERM."""
    from function.local.nats_cluster import embedded_server

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers too
    check_secure_flags(secure, cluster, tenants)
    server = embedded_server(
        cluster,
        port=port,
        monitor_port=monitor_port,
        cluster_port=cluster_port,
        store_dir=store_dir,
    )
    env = {"SURGE_NATS_URL": server.url, "SURGE_STREAM_REPLICAS": str(cluster)}
    stack = None
    if secure:
        from function.local.nats_server import EmbeddedNats
        from function.local.secure_stack import secure_stack

        assert isinstance(server, EmbeddedNats)  # one node
        names = parse_tenants(tenants)
        try:
            stack = secure_stack(secrets_dir, server.url, names)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tenants") from None
        server.extra_config = stack.server_config
        env |= stack.env
    with server:
        if stack is not None and stack.tenants:
            asyncio.run(_add_tenant_streams(stack))
            typer.echo(tenants_connect(stack), err=True)
        console.print(f"nats-server on {server.url} ({cluster} node(s)); Ctrl-C stops")
        console.print("clients want:\n" + "\n".join(f"  export {k}={v}" for k, v in env.items()))
        console.file.flush()  # a pipe (a supervisor, a test) sees it at once
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


async def _add_tenant_streams(stack: SecureStack) -> None:
    """Each tenant's job stream, so that it can submit at once."""
    from function.local.secure_stack import add_missing_tenants
    from function.transport.connect import open_nats

    nc = await open_nats(stack.url, stack.auth(), name="surge-nats", reconnect=False)
    try:
        await add_missing_tenants(nc.jetstream(), stack.tenants, WorkerSettings())
    finally:
        await nc.close()
