"""A secured local stack: mutual TLS, a trusted user, and a NATS user and job stream per tenant.

Used by `surge nats --secure` and `surge up --secure`::

    stack = secure_stack(Path(".cache/surge/secure"), "nats://127.0.0.1:4222", ["acme"])
    with EmbeddedNats(port=4222, extra_config=stack.server_config):
        ...  # connect with stack.auth(), then: await add_missing_tenants(js, stack.tenants, ...)
    stack.env                # the trusted user's SURGE_NATS_* (workers, the scaler, operators)
    stack.tenants["acme"]    # what tenant acme's clients set (SURGE_TENANT, its user, TLS)

Throw-away secrets (see `throwaway_pki`): every tenant's clients share the one client
certificate; their NATS user, not the certificate, is what keeps them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nats.js import JetStreamContext

from function.contract.nats_auth import NatsAuth
from function.contract.quota import TenantQuota
from function.contract.settings import WorkerSettings, is_valid_tenant
from function.local.throwaway_pki import (
    LOCAL_USER,
    client_env,
    local_secrets,
    password_file,
    secure_server_config,
)
from function.transport.tenants import add_tenant, list_tenants

__all__ = ["SecureStack", "add_missing_tenants", "secure_stack"]

log = logging.getLogger("surge.local")


@dataclass(frozen=True)
class SecureStack:
    """A secured server's settings and what each kind of client sets to reach it."""

    url: str
    server_config: str  # nats-server's `tls` and `authorization` blocks
    env: dict[str, str]  # the trusted user's SURGE_NATS_* variables
    tenants: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> its variables

    def auth(self) -> NatsAuth:
        """The trusted user's credentials, from these settings alone (not the environment)."""
        env = self.env
        return NatsAuth(
            creds=None,
            nkey=None,
            user=env["SURGE_NATS_USER"],
            password=None,
            password_file=Path(env["SURGE_NATS_PASSWORD_FILE"]),
            token=None,
            token_file=None,
            tls_ca=Path(env["SURGE_NATS_TLS_CA"]),
            tls_cert=Path(env["SURGE_NATS_TLS_CERT"]),
            tls_key=Path(env["SURGE_NATS_TLS_KEY"]),
        )


def secure_stack(folder: Path, url: str, tenants: Iterable[str] = ()) -> SecureStack:
    """Secrets in `folder` (made once, then reused) for a one-node server at `url` with a
    NATS user per tenant; `ValueError` for a name that cannot be a tenant."""
    names = list(dict.fromkeys(tenants))
    bad = [name for name in names if not is_valid_tenant(name) or name == LOCAL_USER]
    if bad:
        raise ValueError(f"not tenant ids: {', '.join(bad)} ({LOCAL_USER!r} is the trusted user)")
    folder.mkdir(parents=True, exist_ok=True)
    pki, password = local_secrets(folder)
    users = {name: password_file(folder, name) for name in names}
    env = client_env(pki, password, url)
    return SecureStack(
        url=url,
        server_config=secure_server_config(pki, password, tenants=users),
        env=env,
        tenants={
            name: {"SURGE_TENANT": name, **client_env(pki, secret, url, user=name)}
            for name, secret in users.items()
        },
    )


async def add_missing_tenants(
    js: JetStreamContext, tenants: Iterable[str], settings: WorkerSettings
) -> list[str]:
    """Create the job stream of each tenant that has none (no quotas); a tenant that has
    one keeps it and its quotas. Returns the tenants created."""
    existing = await list_tenants(js)
    created = []
    for tenant in tenants:
        if tenant not in existing:
            await add_tenant(js, tenant, TenantQuota(), settings)
            created.append(tenant)
    if created:
        log.info("added tenants %s", ", ".join(created))
    return created
