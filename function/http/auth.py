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
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from prometheus_client import Counter

from function.contract.errors import ErrorCode
from function.contract.http_auth import (
    HTTP_AUTH_ENV_PREFIX,
    HttpAuthError,
    HttpAuthSettings,
    TenantsFile,
    load_tenants,
)

__all__ = [
    "AUTH_REQUESTS",
    "MAX_TOKEN_CHARS",
    "AuthRejected",
    "Authenticator",
    "Principal",
]

log = logging.getLogger("surge.http.auth")

MAX_TOKEN_CHARS = 8192
MIN_RSA_BITS = 2048
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

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


@dataclass(frozen=True)
class _VerifyKey:
    key: Any  # a cryptography public key
    algorithms: frozenset[str]
    kid: str | None


class Authenticator:
    """Checks bearer tokens against the configuration loaded once at app creation."""

    def __init__(
        self, settings: HttpAuthSettings, tenants: TenantsFile | None, keys: list[_VerifyKey]
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
        allowed = frozenset(settings.jwt_algorithms)
        keys: list[_VerifyKey] = []
        if settings.jwt_public_key is not None:
            keys += _load_pem(settings.jwt_public_key, allowed)
        if settings.jwks_file is not None:
            keys += _load_jwks(settings.jwks_file, allowed)
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
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthRejected(401, "malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.settings.jwt_algorithms:
            raise AuthRejected(401, "token algorithm is not allowed")
        keys = [
            k
            for k in self._keys
            if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)
        ]
        if not keys:
            raise AuthRejected(401, "no configured key for the token's algorithm and key id")
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.settings.jwt_audience,
                    issuer=self.settings.jwt_issuer,
                    leeway=self.settings.jwt_leeway_s,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise AuthRejected(401, _reason(exc)) from None
            return self._principal(claims)
        raise AuthRejected(401, "bad signature")

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


def _reason(exc: Exception) -> str:
    """Which check a JWT failed, in fixed words (PyJWT's own messages are not shown)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim"
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "token expired (exp)"),
        (jwt.ImmatureSignatureError, "token not yet valid (nbf or iat)"),
        (jwt.InvalidAudienceError, "wrong audience (aud)"),
        (jwt.InvalidIssuerError, "wrong issuer (iss)"),
        (jwt.InvalidIssuedAtError, "token's iat is not a number"),
        (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "malformed token"


def _algorithms_for(key: object) -> frozenset[str]:
    """The JWT algorithms a public key can verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return frozenset({_EC_ALGORITHMS[key.curve.name]})
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _usable(key: object, allowed: frozenset[str], where: str) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise HttpAuthError(f"{where}: an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
    algorithms = _algorithms_for(key) & allowed
    if not algorithms:
        raise HttpAuthError(f"{where}: a key none of the allowed JWT algorithms can use")
    return algorithms


def _load_pem(path: Path, allowed: frozenset[str]) -> list[_VerifyKey]:
    """Public keys and certificates from a PEM file; a private key is refused."""
    where = f"{HTTP_AUTH_ENV_PREFIX}JWT_PUBLIC_KEY {str(path)!r}"
    blocks = list(_PEM_BLOCK.finditer(_read(path, where)))
    if not blocks:
        raise HttpAuthError(f"{where} holds no PEM block")
    keys = []
    for block in blocks:
        label = block.group(1).decode()
        if "PRIVATE" in label:
            raise HttpAuthError(f"{where} holds a private key: mount only the public key")
        try:
            if label == "CERTIFICATE":
                key: object = x509.load_pem_x509_certificate(block.group(0)).public_key()
            else:
                key = serialization.load_pem_public_key(block.group(0))
        except (ValueError, TypeError) as exc:
            raise HttpAuthError(f"{where}: a {label} block is not usable: {exc}") from None
        keys.append(_VerifyKey(key, _usable(key, allowed, where), None))
    return keys


def _load_jwks(path: Path, allowed: frozenset[str]) -> list[_VerifyKey]:
    """Signing keys from a JWKS file; symmetric and private keys are refused."""
    where = f"{HTTP_AUTH_ENV_PREFIX}JWKS_FILE {str(path)!r}"
    try:
        document = json.loads(_read(path, where))
    except ValueError as exc:
        raise HttpAuthError(f"{where} is not valid JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise HttpAuthError(f'{where} has no "keys" list')
    keys = []
    for index, entry in enumerate(entries):
        here = f"{where} key {index}"
        if not isinstance(entry, dict):
            raise HttpAuthError(f"{here} is not a JSON object")
        if entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct" or _PRIVATE_JWK_MEMBERS & entry.keys():
            raise HttpAuthError(f"{here} is a symmetric or private key: give public keys only")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise HttpAuthError(f"{here} is not usable ({type(exc).__name__})") from None
        algorithms = _usable(jwk.key, allowed, here) & {jwk.algorithm_name}
        if not algorithms:
            raise HttpAuthError(f"{here}: its algorithm {jwk.algorithm_name} is not allowed")
        kid = entry.get("kid")
        keys.append(_VerifyKey(jwk.key, algorithms, kid if isinstance(kid, str) else None))
    if not keys:
        raise HttpAuthError(f"{where} has no signing key")
    return keys


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HttpAuthError(f"{where}: cannot read it: {exc.strerror}") from None
