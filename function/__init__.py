"""Surge's inference function: NATS JetStream jobs in, ONNX Runtime results out.

Packages, lowest first (each imports only from those above it in this list):

    contract   names, settings, wire models, parsing, errors: pure, shared with scaler/loadgen
    telemetry  JSON logs, Prometheus metrics, OpenTelemetry traces
    transport  JetStream I/O: topology, pull, result storage, heartbeats, sweepers
    models     ONNX Runtime sessions, tasks, imaging, warmup
    engine     one job's life: consumer -> job -> finish -> settle (-> transport.storage)
    worker     one process: connect, warm, consume, drain;  client: publish jobs, read results
    local      the embedded nats-server and worker processes
    http       the Knative function (`new`), FastAPI app, uvicorn serving
    commands   `surge` command groups: nats (the embedded server), tenants
    cli        the `surge` command;  startup: its imports with the garbage collector paused
    eventloop  the worker's event loop: uvloop where installed

`new` (the Knative Functions constructor) is imported lazily, so that importing
`function.contract` from the scaler or the load generator stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new"]


def __getattr__(name: str) -> Any:
    if name == "new":
        from function.http.func import new

        return new
    raise AttributeError(f"module 'function' has no attribute {name!r}")
