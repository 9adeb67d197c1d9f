"""How every part of Surge proves who it is to NATS: one set of `SURGE_NATS_*` settings.

The NATS conventions, each from a file (a Kubernetes Secret mounted read-only):

    SURGE_NATS_CREDS          a `.creds` file (user JWT + nkey seed; decentralized auth)
    SURGE_NATS_NKEY           an nkey seed file
    SURGE_NATS_USER           a user name, with SURGE_NATS_PASSWORD_FILE (or _PASSWORD)
    SURGE_NATS_TOKEN_FILE     a token file (or SURGE_NATS_TOKEN)
    SURGE_NATS_TLS_CA         CA bundle that signed the server's certificate
    SURGE_NATS_TLS_CERT/_KEY  this client's certificate and key (mutual TLS)

Secrets are `SecretStr` or paths: printing the settings never shows one, and `describe()`
names only the kind of credential and the files it came from.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from function.contract.errors import SurgeError

__all__ = ["NatsAuth", "NatsAuthError", "NatsConnectError", "redact_url"]

NATS_ENV_PREFIX = "SURGE_NATS_"


class NatsAuthError(SurgeError):
    """The NATS credentials are unusable (a missing file, two kinds at once) or refused."""


class NatsConnectError(SurgeError):
    """A first connection failed for a reason retrying will not fix (a refused credential,
    an untrusted certificate), or no server answered in time."""


class NatsAuth(BaseSettings):
    """Credentials and TLS for a NATS connection; every field is optional (an open server)."""

    model_config = SettingsConfigDict(env_prefix=NATS_ENV_PREFIX, extra="ignore")

    creds: Path | None = None
    nkey: Path | None = None
    user: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    token: SecretStr | None = None
    token_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def kinds(self) -> list[str]:
        """The kinds of credential given (at most one may be)."""
        given = {
            "creds": self.creds is not None,
            "nkey": self.nkey is not None,
            "user": self.user is not None,
            "token": self.token is not None or self.token_file is not None,
        }
        return [kind for kind, present in given.items() if present]

    def problems(self) -> list[str]:
        """What makes these settings unusable, one sentence each (no secrets)."""
        found: list[str] = []
        if len(self.kinds()) > 1:
            found.append(f"give one kind of NATS credential, not {' and '.join(self.kinds())}")
        if (self.password is not None or self.password_file is not None) and self.user is None:
            found.append("a NATS password needs SURGE_NATS_USER")
        if self.user is not None and self.password is None and self.password_file is None:
            found.append("SURGE_NATS_USER needs SURGE_NATS_PASSWORD_FILE (or _PASSWORD)")
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append("mutual TLS needs both SURGE_NATS_TLS_CERT and SURGE_NATS_TLS_KEY")
        for name, path in self._files().items():
            if not path.is_file():
                found.append(f"{name} {str(path)!r} is not a readable file")
        return found

    def check(self) -> None:
        """Raise `NatsAuthError` naming every problem at once."""
        found = self.problems()
        if found:
            raise NatsAuthError("; ".join(found))

    def _files(self) -> dict[str, Path]:
        named = {
            "SURGE_NATS_CREDS": self.creds,
            "SURGE_NATS_NKEY": self.nkey,
            "SURGE_NATS_PASSWORD_FILE": self.password_file,
            "SURGE_NATS_TOKEN_FILE": self.token_file,
            "SURGE_NATS_TLS_CA": self.tls_ca,
            "SURGE_NATS_TLS_CERT": self.tls_cert,
            "SURGE_NATS_TLS_KEY": self.tls_key,
        }
        return {name: path for name, path in named.items() if path is not None}

    def password_value(self) -> str | None:
        return _secret(self.password, self.password_file)

    def token_value(self) -> str | None:
        return _secret(self.token, self.token_file)

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def describe(self) -> str:
        """A log line's worth: which credential and TLS, by file name, never a secret."""
        if self.creds is not None:
            who = f"credentials file {self.creds}"
        elif self.nkey is not None:
            who = f"nkey seed file {self.nkey}"
        elif self.user is not None:
            who = f"user {self.user!r} with a password"
        elif self.token is not None or self.token_file is not None:
            who = "a token"
        else:
            who = "no credentials"
        if self.tls_cert is not None:
            return f"{who}, mutual TLS (certificate {self.tls_cert})"
        return f"{who}, TLS" if self.tls_ca is not None else who


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if path is not None:
        return path.read_text().strip()
    return value.get_secret_value() if value is not None else None


def redact_url(url: str) -> str:
    """`nats://user:pass@host` as `nats://user:***@host` (each of a comma-separated list)."""
    return ",".join(_redact_one(one.strip()) for one in url.split(","))


def _redact_one(url: str) -> str:
    scheme, _, rest = url.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, host = authority.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{'://' if scheme else ''}{shown}@{host}{slash}{path}"
