"""Bearer auth for `POST /v1/infer/{function}` and `POST /`: API keys or JWTs.

A token is looked up as an API key first (its SHA-256 digest against every digest in the
tenants file, in constant time); otherwise, when JWT keys are configured and it has a
JWT's shape, it is verified as a JWT: an asymmetric signature by a configured key, `exp`,
`iss` and `aud`, with `jwt_leeway_s` of clock skew.

    401  no, malformed or invalid credential, with `WWW-Authenticate: Bearer`
    403  a valid credential whose tenant may not call this worker's function

Reasons name the check that failed and never the token. Every decision is counted in
`surge_http_auth_total{function,tenant,result}`; a tenant not in the tenants file counts
as `other`, a request with no trusted tenant as `none`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

from function.contract.errors import ErrorCode
from function.contract.http_auth import (
    HttpAuthSettings,
    TenantsFile,
    load_tenants,
)

if TYPE_CHECKING:
    from function.http.jwtkeys import VerifyKey

__all__ = [
    "AUTH_REQUESTS",
    "MAX_TOKEN_CHARS",
    "AuthRejected",
    "Authenticator",
    "Principal",
]

log = logging.getLogger("surge.http.auth")

MAX_TOKEN_CHARS = 8192
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token

AUTH_REQUESTS = Counter(
    "surge_http_auth_total",
    "HTTP requests checked by auth, by tenant (configured, other or none) and result.",
    ["function", "tenant", "result"],
)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from and what it may call."""

    tenant: str
    functions: frozenset[str]
    via: Literal["api_key", "jwt"]


class AuthRejected(Exception):
    """A request refused with 401 or 403; `reason` is safe to show and log."""

    def __init__(
        self, status: Literal[401, 403], reason: str, *, tenant: str | None = None, error: str = ""
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.tenant = tenant
        self.error = error or ("invalid_token" if status == 401 else "insufficient_scope")

    @property
    def code(self) -> ErrorCode:
        return ErrorCode.UNAUTHORIZED if self.status == 401 else ErrorCode.FORBIDDEN

    def www_authenticate(self) -> str:
        """The RFC 6750 challenge (a missing credential gets no error code)."""
        if self.error == "missing":
            return 'Bearer realm="surge"'
        description = self.reason.replace('"', "'")
        return f'Bearer realm="surge", error="{self.error}", error_description="{description}"'


class Authenticator:
    """Checks bearer tokens against the configuration loaded once at app creation."""

    def __init__(
        self, settings: HttpAuthSettings, tenants: TenantsFile | None, keys: list[VerifyKey]
    ) -> None:
        self.settings = settings
        self.tenants = dict(tenants.tenants) if tenants is not None else {}
        self._digests = [
            (digest, name) for name, t in self.tenants.items() for digest in t.api_keys_sha256
        ]
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: HttpAuthSettings) -> Authenticator | None:
        """None when auth is off; `HttpAuthError` when the configuration is unusable."""
        if not settings.enabled:
            return None
        settings.check()
        tenants = load_tenants(settings.keys_file) if settings.keys_file is not None else None
        keys: list[VerifyKey] = []
        if settings.jwt_public_key is not None or settings.jwks_file is not None:
            from function.http.jwtkeys import load_keys  # PyJWT and X.509: only for JWTs

            keys = load_keys(settings)
        return cls(settings, tenants, keys)

    def metric_tenant(self, tenant: str | None) -> str:
        """A bounded label: a configured tenant, `other` or `none`."""
        if tenant is None:
            return "none"
        return tenant if tenant in self.tenants else "other"

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization` header, or `AuthRejected` (401)."""
        token = _bearer(authorization)
        principal = self._api_key(token)
        if principal is not None:
            return principal
        if self._keys and token.count(".") == 2:
            return self._jwt(token)
        raise AuthRejected(401, "unknown API key" if self._digests else "malformed token")

    def authorize(self, principal: Principal, function: str) -> None:
        """`AuthRejected` (403) unless the principal may call `function`."""
        if function not in principal.functions:
            message = f"tenant {principal.tenant!r} may not call {function!r}"
            raise AuthRejected(403, message, tenant=principal.tenant)

    def _api_key(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: str | None = None
        for candidate, tenant in self._digests:  # no early exit: time does not tell which
            if hmac.compare_digest(digest, candidate):
                found = tenant
        if found is None:
            return None
        return Principal(found, frozenset(self.tenants[found].functions), "api_key")

    def _jwt(self, token: str) -> Principal:
        from function.http.jwtkeys import verify_jwt

        try:
            claims = verify_jwt(token, self._keys, self.settings)
        except ValueError as exc:
            raise AuthRejected(401, str(exc)) from None
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        name = self.settings.tenant_claim
        tenant = claims[name] if name in claims else claims.get("sub")
        if not isinstance(tenant, str) or not tenant or len(tenant) > 256:
            raise AuthRejected(401, f"token has no usable {name!r} or 'sub' claim")
        if not tenant.isprintable():
            raise AuthRejected(401, f"token's {name!r} claim is not printable")
        raw = claims.get(self.settings.functions_claim)
        if raw is None:
            entry = self.tenants.get(tenant)
            functions = entry.functions if entry is not None else []
        elif isinstance(raw, list) and all(isinstance(f, str) for f in raw):
            functions = raw
        else:
            claim = self.settings.functions_claim
            raise AuthRejected(401, f"token's {claim!r} claim is not a list of strings")
        return Principal(tenant, frozenset(functions), "jwt")


def _bearer(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise AuthRejected(401, "missing bearer token", error="missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthRejected(401, "authorization scheme must be Bearer", error="invalid_request")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
        raise AuthRejected(401, "malformed bearer token", error="invalid_request")
    return token
