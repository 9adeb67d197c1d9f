"""Who may call the HTTP surface: the `SURGE_HTTP_AUTH_*` settings and the tenants file.

Auth is off unless a credential source is configured:

    SURGE_HTTP_AUTH_KEYS_FILE        tenants file (JSON or YAML, a mounted Secret)
    SURGE_HTTP_AUTH_JWT_PUBLIC_KEY   PEM file of public keys (or certificates) that sign JWTs
    SURGE_HTTP_AUTH_JWKS_FILE        JWKS file (JSON on disk; never fetched)

The tenants file maps each tenant to the functions it may call and the SHA-256 hex digests
of its API keys; it never holds a key itself:

    {"tenants": {"acme": {"functions": ["remove-bg"], "api_keys_sha256": ["<64 hex>"]}}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from function.contract.errors import SurgeError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HTTP_AUTH_ENV_PREFIX",
    "HttpAuthError",
    "HttpAuthSettings",
    "Tenant",
    "TenantsFile",
    "load_tenants",
]

HTTP_AUTH_ENV_PREFIX = "SURGE_HTTP_AUTH_"
# JWT algorithms that verify with a public key; `none` and HS* are never accepted.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class HttpAuthError(SurgeError):
    """The HTTP auth configuration is unusable (a missing or malformed file, a bad setting)."""


def _hex_digest(value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("an API key entry must be a SHA-256 hex digest (64 hex digits)")
    return digest


TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Sha256Hex = Annotated[str, AfterValidator(_hex_digest)]


class Tenant(BaseModel):
    """One tenant: the functions it may call and the digests of its API keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    functions: list[str] = Field(default_factory=list)
    api_keys_sha256: list[Sha256Hex] = Field(default_factory=list)


class TenantsFile(BaseModel):
    """The tenants file; a digest may belong to one tenant only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[TenantName, Tenant]

    @model_validator(mode="after")
    def _digests_unique(self) -> TenantsFile:
        owners: dict[str, str] = {}
        for name, tenant in self.tenants.items():
            for digest in tenant.api_keys_sha256:
                if owners.setdefault(digest, name) != name:
                    raise ValueError(
                        f"one API key digest is listed for {owners[digest]!r} and {name!r}"
                    )
        return self


class HttpAuthSettings(BaseSettings):
    """HTTP auth settings, `SURGE_HTTP_AUTH_<NAME>`; with no source given, auth is off."""

    model_config = SettingsConfigDict(env_prefix=HTTP_AUTH_ENV_PREFIX, extra="ignore")

    keys_file: Path | None = Field(default=None, description="Tenants file (JSON or YAML).")
    jwt_public_key: Path | None = Field(default=None, description="PEM public keys for JWTs.")
    jwks_file: Path | None = Field(default=None, description="JWKS (JSON) for JWTs.")
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of a JWT.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of a JWT.")
    jwt_algorithms: list[str] = Field(default_factory=lambda: list(ASYMMETRIC_ALGORITHMS))
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed.")
    tenant_claim: str = Field(default="tenant", min_length=1)
    functions_claim: str = Field(default="surge_functions", min_length=1)

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            raise ValueError(
                f"only asymmetric JWT algorithms are accepted ({', '.join(ASYMMETRIC_ALGORITHMS)})"
            )
        return value

    @classmethod
    def from_env(cls) -> HttpAuthSettings:
        """The settings from the environment, or `HttpAuthError` naming each bad variable."""
        try:
            return cls()
        except ValidationError as exc:
            raise HttpAuthError(
                _reasons(exc, lambda loc: HTTP_AUTH_ENV_PREFIX + str(loc[0]).upper())
            ) from None

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_public_key is not None or self.jwks_file is not None

    @property
    def enabled(self) -> bool:
        """True when any credential source is configured."""
        return self.keys_file is not None or self.jwt_enabled

    def problems(self) -> list[str]:
        """What makes these settings unusable, one sentence each."""
        found: list[str] = []
        if self.jwt_enabled and not self.jwt_issuer:
            found.append(f"JWT verification needs {HTTP_AUTH_ENV_PREFIX}JWT_ISSUER")
        if self.jwt_enabled and not self.jwt_audience:
            found.append(f"JWT verification needs {HTTP_AUTH_ENV_PREFIX}JWT_AUDIENCE")
        named = {
            "KEYS_FILE": self.keys_file,
            "JWT_PUBLIC_KEY": self.jwt_public_key,
            "JWKS_FILE": self.jwks_file,
        }
        for name, path in named.items():
            if path is not None and not path.is_file():
                found.append(f"{HTTP_AUTH_ENV_PREFIX}{name} {str(path)!r} is not a readable file")
        return found

    def check(self) -> None:
        """Raise `HttpAuthError` naming every problem at once."""
        found = self.problems()
        if found:
            raise HttpAuthError("; ".join(found))


def load_tenants(path: Path) -> TenantsFile:
    """The tenants file at `path` (`.yaml`/`.yml` as YAML, else JSON), or `HttpAuthError`."""
    where = f"{HTTP_AUTH_ENV_PREFIX}KEYS_FILE {str(path)!r}"
    try:
        data = _parse(path)
    except OSError as exc:
        raise HttpAuthError(f"{where}: cannot read it: {exc.strerror}") from None
    except ImportError:
        raise HttpAuthError(f"{where}: a YAML tenants file needs PyYAML") from None
    except ValueError as exc:
        raise HttpAuthError(f"{where} is not valid {_kind(path)}: {exc}") from None
    try:
        return TenantsFile.model_validate(data)
    except ValidationError as exc:
        reasons = _reasons(exc, lambda loc: ".".join(str(p) for p in loc) or "top level")
        raise HttpAuthError(f"{where}: {reasons}") from None


def _reasons(exc: ValidationError, name: Callable[[tuple[int | str, ...]], str]) -> str:
    """Each validation error as `where: why`, without the offending value."""
    return "; ".join(
        f"{name(err['loc'])}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    )


def _kind(path: Path) -> str:
    return "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"


def _parse(path: Path) -> Any:
    """JSON or YAML from `path`; syntax errors as `ValueError` naming only where they are."""
    text = path.read_text()
    if _kind(path) == "JSON":
        return json.loads(text)
    import yaml  # only a YAML tenants file needs PyYAML

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{getattr(exc, 'problem', None) or 'syntax error'}{at}") from None
