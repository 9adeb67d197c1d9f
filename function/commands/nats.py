"""`surge nats`: the real nats-server on loopback for development (one node or a cluster).

surge nats                                  JetStream on 127.0.0.1:4222
surge nats --cluster 3                      three nodes on 4222..4224, streams replicated
surge nats --secure --tenants acme,globex   mutual TLS, a trusted user, and a NATS user
                                            and a job stream per tenant

It refuses ports something already listens on, names its log file (`--log`), exits 1
with the log's last lines when a server dies, and stops its servers on SIGTERM, SIGINT
(Ctrl-C) or SIGHUP.
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
    from function.local.nats_cluster import EmbeddedCluster
    from function.local.nats_server import EmbeddedNats
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
    log: Annotated[
        Path | None,
        typer.Option(
            help="The server's log file (default: nats-server.log in --store-dir); a "
            "cluster's nodes write nats-n<i>.log in its folder."
        ),
    ] = None,
) -> None:
    """Run nats-server with JetStream on 127.0.0.1 (or a cluster of N) until Ctrl-C/SIGTERM."""
    from function.local.nats_cluster import embedded_server
    from function.local.nats_server import EmbeddedNats

    # Stop the servers too, even where SIGINT came in ignored (a shell's background job).
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.default_int_handler)
    check_secure_flags(secure, cluster, tenants)
    log = log or store_dir / "nats-server.log"
    server = embedded_server(
        cluster,
        port=port,
        monitor_port=monitor_port,
        cluster_port=cluster_port,
        store_dir=store_dir,
        log_dir=log.parent,
    )
    nodes = [server] if isinstance(server, EmbeddedNats) else server.nodes
    if isinstance(server, EmbeddedNats):
        server.log_file = log
    env = {"SURGE_NATS_URL": server.url, "SURGE_STREAM_REPLICAS": str(cluster)}
    stack = None
    if secure:
        from function.local.secure_stack import secure_stack

        assert isinstance(server, EmbeddedNats)  # one node
        names = parse_tenants(tenants)
        try:
            stack = secure_stack(secrets_dir, server.url, names)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tenants") from None
        server.extra_config = stack.server_config
        env |= stack.env
    try:
        _start(server)
        if stack is not None and stack.tenants:
            asyncio.run(_add_tenant_streams(stack))
            typer.echo(tenants_connect(stack), err=True)
        _banner(server.url, nodes, env)
        dead, code = _watch(nodes)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: stop the servers, exit 0
        return
    finally:
        server.stop()
    tail = "\n".join(f"  {line}" for line in dead.log_tail())
    typer.echo(
        f"surge nats: nats-server on {dead.url} exited with code {code}; "
        f"the end of {dead.log_file}:\n{tail}",
        err=True,
    )
    raise typer.Exit(1)


def _banner(url: str, nodes: list[EmbeddedNats], env: dict[str, str]) -> None:
    pids = ", ".join(str(node.pid) for node in nodes)
    lines = [
        f"nats-server on {url} ({len(nodes)} node(s), pid {pids}); Ctrl-C stops",
        f"log: {', '.join(str(node.log_file) for node in nodes)}",
        "clients want:",
        *(f"  export {k}={v}" for k, v in env.items()),
    ]
    for line in lines:  # whole lines, never wrapped: they are copied and parsed
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    console.file.flush()  # a pipe (a supervisor, a test) sees it at once


def _start(server: EmbeddedNats | EmbeddedCluster) -> None:
    """Start the server(s); a port taken or a server that will not start: one line, exit 1."""
    from function.local.nats_server import NatsServerError

    try:
        server.start()
    except NatsServerError as exc:
        typer.echo(f"surge nats: {exc}", err=True)
        raise typer.Exit(1) from None


def _watch(nodes: list[EmbeddedNats], every_s: float = 0.5) -> tuple[EmbeddedNats, int | None]:
    """Wait until a node exits; return it and its exit status (Ctrl-C or SIGTERM:
    KeyboardInterrupt)."""
    while True:
        for node in nodes:
            if not node.running:  # polls first: the status read next is the exit's
                return node, node.returncode
        time.sleep(every_s)


async def _add_tenant_streams(stack: SecureStack) -> None:
    """Each tenant's job stream, so that it can submit at once."""
    from function.local.secure_stack import add_missing_tenants
    from function.transport.connect import open_nats

    nc = await open_nats(stack.url, stack.auth(), name="surge-nats", reconnect=False)
    try:
        await add_missing_tenants(nc.jetstream(), stack.tenants, WorkerSettings())
    finally:
        await nc.close()
