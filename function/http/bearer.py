"""The FastAPI side of bearer auth: the dependency that sets a request's tenant, and the
401/403 error result. (`auth` decides; it imports no web framework, so a worker checks
its configuration at once, before FastAPI is loaded.)"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from function.contract.wire import ErrorInfo, JobStatus, Result
from function.http.auth import AUTH_REQUESTS, Authenticator, AuthRejected

__all__ = ["bearer_auth", "rejection_response"]

log = logging.getLogger("surge.http.auth")

_SCHEME = HTTPBearer(auto_error=False, description="An API key or a JWT.")
Dependency = Callable[..., Awaitable[None]]


def bearer_auth(authenticator: Authenticator | None, function: Callable[[], str]) -> Dependency:
    """A FastAPI dependency setting `request.state.tenant` (None while auth is off)."""
    if authenticator is None:

        async def open_route(request: Request) -> None:
            request.state.tenant = None

        return open_route

    async def check(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_SCHEME)],
    ) -> None:
        name = function()
        try:
            principal = authenticator.authenticate(request.headers.get("authorization"))
            authenticator.authorize(principal, name)
        except AuthRejected as exc:
            tenant = authenticator.metric_tenant(exc.tenant)
            AUTH_REQUESTS.labels(name, tenant, exc.code.value).inc()
            log.info("refused (%d): %s", exc.status, exc.reason, extra={"tenant": exc.tenant})
            raise
        AUTH_REQUESTS.labels(name, authenticator.metric_tenant(principal.tenant), "ok").inc()
        log.debug("authenticated by %s", principal.via, extra={"tenant": principal.tenant})
        request.state.tenant = principal.tenant

    return check


def rejection_response(exc: AuthRejected, function: str) -> JSONResponse:
    """The app's error result for a refused request, with the Bearer challenge on 401."""
    result = Result(
        job_id=uuid.uuid4().hex,
        status=JobStatus.ERROR,
        function=function,
        error=ErrorInfo(code=exc.code, message=exc.reason),
    )
    headers = {"WWW-Authenticate": exc.www_authenticate()} if exc.status == 401 else None
    return JSONResponse(result.model_dump(mode="json"), status_code=exc.status, headers=headers)
