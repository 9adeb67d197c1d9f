"""A nats-server cluster on loopback: N `EmbeddedNats` nodes with JetStream and routes.

Used by `surge nats --cluster 3`, `surge up --cluster 3` and the failover tests::

    with EmbeddedCluster(3) as cluster:
        nc = await nats.connect(cluster.urls)     # or servers_from(cluster.url)
        cluster.kill(0)                           # SIGKILL one node; the others carry on
        cluster.restart(0)                        # back, from its own store
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from function.local.nats_server import EmbeddedNats, NatsServerError, Startable, free_port

__all__ = ["CLUSTER_NAME", "EmbeddedCluster", "embedded_server"]

CLUSTER_NAME = "surge"


def _ports(base: int, size: int, host: str) -> list[int]:
    """`base`, `base + 1`, ... or free ports when `base` is 0."""
    return [base + i for i in range(size)] if base else [free_port(host) for _ in range(size)]


def _healthy(monitor_url: str) -> bool:
    """Whether the node's `/healthz` says JetStream is up with a meta leader and current."""
    try:
        with urllib.request.urlopen(f"{monitor_url}/healthz", timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class EmbeddedCluster(Startable):
    """`size` nats-server processes on `host`, clustered as `surge`, each with its own store.

    Node `i` is `EmbeddedNats` named `n<i>` with client port `port + i` (free ports when 0),
    monitoring on `monitor_port + i` and routes on `cluster_port + i` to every other node.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        cluster_port: int = 0,
        store_dir: Path | None = None,
        max_payload: int = 8 * 1024 * 1024,
        log_dir: Path | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self._own_store = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="surge-cluster-"))
        routes = _ports(cluster_port, size, host)
        self.nodes: list[EmbeddedNats] = []
        for index, (client, monitor) in enumerate(
            zip(_ports(port, size, host), _ports(monitor_port, size, host), strict=True)
        ):
            others = ", ".join(
                f'"nats-route://{host}:{p}"' for i, p in enumerate(routes) if i != index
            )
            block = (
                f'cluster {{ name: "{CLUSTER_NAME}", listen: "{host}:{routes[index]}", '
                f"routes: [{others}] }}\n"
            )
            self.nodes.append(
                EmbeddedNats(
                    host=host,
                    port=client,
                    monitor_port=monitor,
                    store_dir=self.store_dir / f"n{index}",
                    max_payload=max_payload,
                    log_file=log_dir / f"nats-n{index}.log" if log_dir else None,
                    server_name=f"n{index}",
                    extra_config=block if size > 1 else "",
                )
            )

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (a list `nats.connect` takes as `servers`)."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The client URLs comma-separated, as `SURGE_NATS_URL` takes them."""
        return ",".join(self.urls)

    @property
    def names(self) -> list[str]:
        """Node server names, as JetStream reports leaders (`n0`, `n1`, ...)."""
        return [node.server_name or "" for node in self.nodes]

    def index_of(self, server_name: str) -> int:
        """The node index of a server name (e.g. a stream's `cluster.leader`)."""
        return self.names.index(server_name)

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until the nodes' JetStream is healthy (meta leader elected, caught up)."""
        pending = list(range(len(self.nodes)) if indexes is None else indexes)
        deadline = time.monotonic() + timeout
        while pending:
            url = self.nodes[pending[0]].monitor_url
            assert url is not None
            if _healthy(url):
                pending.pop(0)
                continue
            if not self.nodes[pending[0]].running:
                raise NatsServerError(f"node n{pending[0]} exited")
            if time.monotonic() > deadline:
                raise NatsServerError(f"cluster not healthy within {timeout}s (node n{pending[0]})")
            time.sleep(0.1)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node and wait until JetStream is up cluster-wide."""
        try:
            for node in self.nodes:
                node.start()
            self.wait_healthy(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (a crash); its store stays for `restart`."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        """Start node `index` again from its store and wait until it is healthy."""
        self.nodes[index].kill()
        self.nodes[index].start()
        self.wait_healthy([index], timeout=timeout)

    def stop(self) -> None:
        """Stop every node and remove a store this cluster created."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)


def embedded_server(
    nodes: int,
    *,
    port: int = 0,
    monitor_port: int | None = 0,
    cluster_port: int = 0,
    store_dir: Path | None = None,
    log_dir: Path | None = None,
) -> EmbeddedNats | EmbeddedCluster:
    """One `EmbeddedNats` when `nodes` is 1, else an `EmbeddedCluster` of `nodes` (not started)."""
    if nodes == 1:
        log_file = log_dir / "nats-server.log" if log_dir else None
        return EmbeddedNats(
            port=port, monitor_port=monitor_port, store_dir=store_dir, log_file=log_file
        )
    return EmbeddedCluster(
        nodes,
        port=port,
        monitor_port=monitor_port or 0,
        cluster_port=cluster_port,
        store_dir=store_dir,
        log_dir=log_dir,
    )
