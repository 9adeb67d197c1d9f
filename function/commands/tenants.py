"""`surge tenants`: add, change, list and remove tenants (one `SURGE_TENANT_<id>` stream each).

surge tenants add acme --max-pending 1000 --max-rate 50   create it, or change its quotas
surge tenants list                                        quotas and queued jobs, as a table
surge tenants remove acme [--force]                       delete it (--force drops queued jobs)
surge tenants webhook-secret acme                         the secret its webhooks are signed with

An operator's commands: they manage streams, so they need a NATS user that may (the
trusted one), given with `surge`'s NATS flags like every other command. Workers find a
tenant added here within seconds; its NATS user (what keeps it apart) is the server's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypedDict, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from function.commands.admin import admin_call, fail
from function.commands.options import DEFAULT_NATS_URL, NatsUrl
from function.contract.quota import TenantQuota
from function.contract.settings import WorkerSettings, is_valid_tenant

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from function.local.secure_stack import SecureStack

__all__ = ["TenantRow", "check_secure_flags", "parse_tenants", "tenants_app", "tenants_connect"]

T = TypeVar("T")

tenants_app = typer.Typer(
    help="Tenants: their job streams and quotas (needs a NATS user that may manage streams).",
    no_args_is_help=True,
)

Name = Annotated[
    str, typer.Argument(metavar="NAME", help="The tenant id (lower-case letters, digits, - and _).")
]
_UNLIMITED = "0 = unlimited; left out: unchanged (unlimited for a new tenant)."


class TenantRow(TypedDict):
    """One tenant as `surge tenants list --json` prints it (None: unlimited)."""

    tenant: str
    max_pending: int | None
    max_payload: int | None
    max_rate: float | None
    queued: int
    queued_bytes: int


def parse_tenants(values: list[str] | None, param_hint: str = "--tenants") -> list[str]:
    """Tenant ids from `--tenants a,b --tenants c`, checked; `BadParameter` names the bad ones."""
    names = [name.strip() for name in ",".join(values or []).split(",") if name.strip()]
    bad = [name for name in names if not is_valid_tenant(name)]
    if bad:
        raise typer.BadParameter(f"not tenant ids: {', '.join(bad)}", param_hint=param_hint)
    return list(dict.fromkeys(names))


def check_secure_flags(secure: bool, cluster: int, tenants: list[str] | None) -> None:
    """`--secure` runs one node, and `--tenants` needs `--secure` (a tenant is a NATS user)."""
    if secure and cluster > 1:
        raise typer.BadParameter("--secure runs one node", param_hint="--cluster")
    if tenants and not secure:
        raise typer.BadParameter("tenants need --secure (a tenant is a NATS user)")


def tenants_connect(stack: SecureStack, function: str | None = None) -> str:
    """How each tenant of a secured local stack connects: one `surge` command line each."""
    submit = f"submit --nats-url {stack.url}" + (f" -f {function}" if function else "")
    lines = []
    for tenant, env in stack.tenants.items():
        flags = []
        for name, value in env.items():
            if name != "SURGE_NATS_URL":
                flag = name.removeprefix("SURGE_").removeprefix("NATS_").lower().replace("_", "-")
                flags.append(f"--{flag} {value}")
        lines.append(f"tenant {tenant}: surge {' '.join(flags)} {submit} IMAGE...")
    return "\n".join(lines)


def _checked(name: str) -> str:
    if not is_valid_tenant(name):
        raise typer.BadParameter(
            f"{name!r} is not a tenant id: lower-case letters, digits, '-' and '_'",
            param_hint="NAME",
        )
    return name


def _fail(message: str) -> typer.Exit:
    return fail("tenants", message)


def _jetstream(nats_url: str, action: Callable[[NATS], Awaitable[T]]) -> T:
    """Run `action` on a connection to `nats_url`; what goes wrong is one line, exit 1."""
    who = ", and may this NATS user manage streams (the trusted user, not a tenant's)"
    return admin_call("tenants", nats_url, action, who=who)


def _limit(value: int | float | None, unit: str = "") -> str:
    return "unlimited" if value is None else f"{value:g}{unit}"


@tenants_app.command("add")
def add(
    name: Name,
    max_pending: Annotated[
        int | None, typer.Option(min=0, help=f"Jobs the tenant may have queued. {_UNLIMITED}")
    ] = None,
    max_payload: Annotated[
        int | None, typer.Option(min=0, help=f"Bytes in one job message. {_UNLIMITED}")
    ] = None,
    max_rate: Annotated[
        float | None, typer.Option(min=0, help=f"Jobs per second. {_UNLIMITED}")
    ] = None,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
) -> None:
    """Create a tenant's job stream, or change its quotas; print what it now has."""
    from nats.js.errors import NotFoundError

    from function.contract.settings import tenant_stream
    from function.transport.tenants import add_tenant, quota_of

    _checked(name)
    given = {"max_pending": max_pending, "max_payload": max_payload, "max_rate": max_rate}
    changes = {key: value or None for key, value in given.items() if value is not None}

    async def act(nc: NATS) -> tuple[bool, TenantQuota, int]:
        js = nc.jetstream()
        try:
            current = quota_of((await js.stream_info(tenant_stream(name))).config)
        except NotFoundError:
            current = TenantQuota()
        quota = TenantQuota(**{**current.model_dump(), **changes})
        created = await add_tenant(js, name, quota, WorkerSettings())
        return created, quota, nc.max_payload

    created, quota, server_max = _jetstream(nats_url, act)
    typer.echo(f"tenant {name} {'added' if created else 'updated'}: {quota.describe()}")
    if quota.max_payload is not None and quota.max_payload > server_max:
        typer.echo(f"note: this server takes no message over {server_max} bytes", err=True)


@tenants_app.command("list")
def list_(
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every tenant with its quotas and the jobs queued on its stream."""
    from function.contract.settings import tenant_of_stream
    from function.transport.tenants import quota_of

    async def act(nc: NATS) -> list[TenantRow]:
        rows = []
        for info in await nc.jetstream().streams_info():
            tenant = tenant_of_stream(info.config.name or "")
            if tenant is not None:
                quota = quota_of(info.config)
                rows.append(
                    TenantRow(
                        tenant=tenant,
                        max_pending=quota.max_pending,
                        max_payload=quota.max_payload,
                        max_rate=quota.max_rate,
                        queued=int(info.state.messages or 0),
                        queued_bytes=int(info.state.bytes or 0),
                    )
                )
        return sorted(rows, key=lambda row: row["tenant"])

    rows = _jetstream(nats_url, act)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if not rows:
        typer.echo("no tenants (add one with `surge tenants add NAME`)")
        return
    table = Table("tenant", "max pending", "max payload", "max rate", "queued", "queued bytes")
    for column in table.columns[1:]:
        column.justify = "right"
    for row in rows:
        table.add_row(
            row["tenant"],
            _limit(row["max_pending"]),
            _limit(row["max_payload"], " B"),
            _limit(row["max_rate"], "/s"),
            str(row["queued"]),
            str(row["queued_bytes"]),
        )
    Console(soft_wrap=True).print(table)


@tenants_app.command("remove")
def remove(
    name: Name,
    force: Annotated[
        bool, typer.Option("--force", help="Remove it even with jobs queued (they are dropped).")
    ] = False,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
) -> None:
    """Delete a tenant's job stream; refused while it has queued jobs, unless --force."""
    from nats.js.errors import NotFoundError

    from function.transport.tenants import remove_tenant

    _checked(name)

    async def act(nc: NATS) -> int | None:
        try:
            return await remove_tenant(nc.jetstream(), name, force=force)
        except NotFoundError:
            return None

    dropped = _jetstream(nats_url, act)
    if dropped is None:
        raise _fail(f"no tenant {name} on this server")
    typer.echo(f"tenant {name} removed ({dropped} queued jobs dropped)")


@tenants_app.command("webhook-secret")
def webhook_secret(
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The tenant id; left out: open jobs' secret."),
    ] = None,
) -> None:
    """Print the secret a tenant's webhooks are signed with (derived from
    SURGE_WEBHOOK_SECRET; give it to the tenant for its receiver). Needs no NATS."""
    from function.contract.webhooks import tenant_secret

    if name is not None:
        _checked(name)
    master = WorkerSettings().webhook_secret
    if master is None:
        raise _fail("SURGE_WEBHOOK_SECRET is not set: the workers' master secret is needed")
    typer.echo(tenant_secret(master.get_secret_value().encode(), name).decode())
