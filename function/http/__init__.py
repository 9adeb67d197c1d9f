"""The HTTP surface and the Knative Functions contract.

func   `new()` and `Function`: the worker behind Knative's start/stop/alive/ready
app    FastAPI: probes, `/metrics`, `/v1/infer`, CloudEvents on `POST /`
serve  uvicorn serving with draining on SIGTERM (what `surge worker` runs)
"""

from __future__ import annotations

from function.http.app import (
    HTTP_STATUS,
    create_app,
)
from function.http.func import (
    STUCK_AFTER_S,
    Function,
    new,
)
from function.http.serve import (
    FunctionServer,
    serve,
)

__all__ = [
    "HTTP_STATUS",
    "STUCK_AFTER_S",
    "Function",
    "FunctionServer",
    "create_app",
    "new",
    "serve",
]
