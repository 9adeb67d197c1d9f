"""The HTTP surface and the Knative Functions contract.

func       `new()` and `Function`: the worker behind Knative's start/stop/alive/ready
app        FastAPI: probes, `/metrics`, `/v1/infer`, CloudEvents on `POST /`
body       a request's input: bounded body, multipart upload, image type from the bytes
jobs       `GET`/`DELETE /v1/jobs/{id}`: a job's status, and cancelling it
submit     `POST /v1/jobs/{function}`: queue a job, 202 at once; its webhook gets the result
negotiate  `Accept`: the result JSON or the image output itself (406 when there is none)
openapi    error code -> HTTP status, and the documented request body and error responses
auth       Bearer API keys and JWTs: who the caller is, which tenant, 401 or 403
jwtkeys    JWT verification and its PEM/JWKS keys (PyJWT and X.509 load only for JWTs)
bearer     the FastAPI dependency that sets a request's tenant; the 401/403 result
serve      uvicorn serving with draining on SIGTERM (what `surge worker` runs)

The names below load on first use, so `surge worker` can start loading its model
before FastAPI and uvicorn are imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from function.http.app import (
        create_app,
    )
    from function.http.auth import (
        AUTH_REQUESTS,
        MAX_TOKEN_CHARS,
        Authenticator,
        AuthRejected,
        Principal,
    )
    from function.http.bearer import (
        bearer_auth,
        rejection_response,
    )
    from function.http.body import (
        MAX_FORM_FIELD_BYTES,
        MAX_FORM_PARTS,
        MAX_PART_HEADER_BYTES,
        Upload,
        image_type,
        read_upload,
    )
    from function.http.func import (
        STUCK_AFTER_S,
        Function,
        new,
    )
    from function.http.jobs import (
        ErrorBody,
        jobs_router,
    )
    from function.http.negotiate import (
        IMAGE_DEFAULTS,
        MAX_ACCEPT_RANGES,
        NotAcceptable,
        pick_image,
        wants_image,
    )
    from function.http.openapi import (
        HTTP_STATUS,
        INFER_REQUEST_BODY,
        NOT_ACCEPTABLE,
        error_responses,
        infer_responses,
        status_of,
    )
    from function.http.serve import (
        FunctionServer,
        serve,
    )
    from function.http.submit import (
        Accepted,
        submit_router,
    )

__all__ = [
    "AUTH_REQUESTS",
    "HTTP_STATUS",
    "IMAGE_DEFAULTS",
    "INFER_REQUEST_BODY",
    "MAX_ACCEPT_RANGES",
    "MAX_FORM_FIELD_BYTES",
    "MAX_FORM_PARTS",
    "MAX_PART_HEADER_BYTES",
    "MAX_TOKEN_CHARS",
    "NOT_ACCEPTABLE",
    "STUCK_AFTER_S",
    "Accepted",
    "AuthRejected",
    "Authenticator",
    "ErrorBody",
    "Function",
    "FunctionServer",
    "NotAcceptable",
    "Principal",
    "Upload",
    "bearer_auth",
    "create_app",
    "error_responses",
    "image_type",
    "infer_responses",
    "jobs_router",
    "new",
    "pick_image",
    "read_upload",
    "rejection_response",
    "serve",
    "status_of",
    "submit_router",
    "wants_image",
]


def __getattr__(name: str) -> Any:
    """A public name, from the module that defines it (imported on first use)."""
    if name in __all__:
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
