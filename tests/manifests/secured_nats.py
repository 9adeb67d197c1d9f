"""A real nats-server running manifests/nats/accounts.conf, and its users' connections.

Each user of the fragment (named by its `# -- <name>:` comment) gets a fresh nkey in
place of the example public key, so that the tests can connect as any of them and see
what the server lets that user do.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nkeys  # type: ignore[import-untyped]
from nats.aio.client import Client as NATS

from function.contract.settings import tenant_inbox_prefix
from function.local.nats_server import EmbeddedNats
from tests.nats_security import new_nkey


def users_in(text: str) -> dict[str, str]:
    """User name (from its `# -- <name>:` comment) -> its example public nkey."""
    found = re.findall(r'# -- ([\w-]+):.*?nkey: "(U[A-Z2-7]{55})"', text, re.DOTALL)
    return dict(found)


@dataclass
class Secured:
    """A nats-server running the accounts fragment, with a seed file for each user."""

    url: str
    seeds: dict[str, Path]
    tenants: tuple[str, ...]


@contextlib.contextmanager
def secured_server(folder: Path, accounts: str, tenants: tuple[str, ...]) -> Iterator[Secured]:
    """Start a nats-server with `accounts` (its example keys replaced) under `folder`."""
    seeds = {}
    for user, example in users_in(accounts).items():
        pair = new_nkey(nkeys.PREFIX_BYTE_USER)
        accounts = accounts.replace(example, pair.public_key.decode())
        seeds[user] = folder / f"{user}.nk"
        seeds[user].write_bytes(pair.seed)
    store = folder / "nats"
    store.mkdir()
    (store / "accounts.conf").write_text(accounts)
    with EmbeddedNats(store_dir=store, extra_config="include ./accounts.conf\n") as server:
        yield Secured(server.url, seeds, tenants)


@dataclass
class Session:
    """One user's connection, with the errors the server sent it."""

    nc: NATS
    errors: list[str] = field(default_factory=list)

    async def refused(self, verb: str, subject: str) -> bool:
        """Whether the server refused the last `publish`/`subscription` to `subject`."""
        wanted = f'permissions violation for {verb} to "{subject}"'.lower()
        for _ in range(10):  # the server's -ERR comes on its own time: give it 0.2 s
            await self.nc.flush(timeout=2)
            if any(wanted in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False

    async def close(self) -> None:
        await self.nc.close()


async def connect(secured: Secured, user: str) -> Session:
    """Connect as `user` (a tenant with its own inbox prefix)."""
    session = Session(nc=NATS())

    async def on_error(exc: Exception) -> None:
        session.errors.append(str(exc))

    prefix = tenant_inbox_prefix(user) if user in secured.tenants else "_INBOX"
    session.nc = await nats.connect(
        secured.url,
        nkeys_seed=str(secured.seeds[user]),
        inbox_prefix=prefix,
        error_cb=on_error,
        allow_reconnect=False,
    )
    return session
