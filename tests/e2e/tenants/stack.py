"""A nats-server with a trusted worker user and two tenants, their streams, and a worker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from function.contract.nats_auth import NatsAuth
from function.contract.quota import TenantQuota
from function.contract.tenancy import User, authorization_config, tenant_permissions, trusted
from function.local.nats_server import EmbeddedNats
from function.transport.connect import open_nats
from function.transport.tenants import add_tenant
from function.worker import Worker
from tests.helpers import tiny_settings

A, B = "tenant-a", "tenant-b"
USERS = {
    "surge": trusted("surge", "worker-pw"),
    A: User(user=A, password="a-pw", permissions=tenant_permissions(A)),
    B: User(user=B, password="b-pw", permissions=tenant_permissions(B)),
}


def auth(name: str) -> NatsAuth:
    """The credentials of `USERS[name]`."""
    user = USERS[name]
    return NatsAuth(user=user.user, password=user.password)


@contextlib.contextmanager
def tenant_server(store: Path) -> Any:
    """A nats-server whose users are `USERS`."""
    with EmbeddedNats(store_dir=store, extra_config=authorization_config(USERS)) as started:
        yield started


@contextlib.asynccontextmanager
async def tenant_worker(
    server: EmbeddedNats,
    model_dir: Path,
    quotas: Mapping[str, TenantQuota] | None = None,
    **overrides: Any,
) -> AsyncIterator[Worker]:
    """Both tenants' streams (with `quotas`), then a started `tiny` worker."""
    settings = tiny_settings(server.url, model_dir).model_copy(update=overrides)
    nc = await open_nats(server.url, auth("surge"), name="test-admin")
    for tenant in (A, B):
        await add_tenant(
            nc.jetstream(), tenant, (quotas or {}).get(tenant, TenantQuota()), settings
        )
    await nc.close()
    worker = Worker(settings, auth=auth("surge"))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop(timeout=10)
