"""The HTTP surface and the Knative Functions contract.

func   `new()` and `Function`: the worker behind Knative's start/stop/alive/ready
app    FastAPI: probes, `/metrics`, `/v1/infer`, CloudEvents on `POST /`
auth   Bearer API keys and JWTs: the tenant, 401 and 403
serve  uvicorn serving with draining on SIGTERM (what `surge worker` runs)
"""

from __future__ import annotations

from function.http.app import (
    HTTP_STATUS,
    create_app,
)
from function.http.auth import (
    AUTH_REQUESTS,
    MAX_TOKEN_CHARS,
    Authenticator,
    AuthRejected,
    Principal,
    bearer_auth,
    rejection_response,
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
    "AUTH_REQUESTS",
    "HTTP_STATUS",
    "MAX_TOKEN_CHARS",
    "STUCK_AFTER_S",
    "AuthRejected",
    "Authenticator",
    "Function",
    "FunctionServer",
    "Principal",
    "bearer_auth",
    "create_app",
    "new",
    "rejection_response",
    "serve",
]
