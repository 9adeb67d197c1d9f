"""`surge models push|list|rollout|promote|rollback|status`: new model versions, without
a restart.

surge models push model.onnx -f remove-bg           store a version (its content hash)
surge models list [-f remove-bg]                    pushed versions and what serves
surge models rollout remove-bg VERSION --canary 10%  that share of jobs to VERSION
surge models promote remove-bg                      the canary serves every job
surge models rollback remove-bg                     the stable version serves every job
surge models status remove-bg                       what serves, and the rollout's history

Workers follow the record in the `surge-models` KV bucket and swap sessions between
batches; a canary failing more than `SURGE_CANARY_MAX_ERROR_RATE` of its jobs is rolled
back by the workers themselves. An operator's commands: the NATS user needs the buckets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from function.commands.admin import admin_call, fail
from function.commands.options import DEFAULT_NATS_URL, NatsUrl
from function.contract.rollout import ModelRollout, RolloutError, parse_share

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from function.transport.modelstore import ModelStore

__all__ = ["add_rollout_commands", "describe"]

T = TypeVar("T")

FunctionArg = Annotated[
    str, typer.Argument(metavar="FUNCTION", help="The function, e.g. remove-bg.")
]


def _fail(message: str) -> typer.Exit:
    return fail("models", message)


def _with_store(
    nats_url: str, action: Callable[[ModelStore, NATS], Awaitable[T]], *, create: bool = False
) -> T:
    """Run `action` on the model buckets at `nats_url` (and the connection); what goes
    wrong is one line, exit 1."""
    from function.transport.modelstore import ModelStore

    async def on_store(nc: NATS) -> T:
        return await action(await ModelStore.open(nc.jetstream(), create=create), nc)

    return admin_call("models", nats_url, on_store)


def describe(record: ModelRollout) -> str:
    """What serves a function, in one line."""
    stable = record.stable or "the deployed model"
    if record.canary is None:
        line = f"{record.function}: {stable} serves every job"
        return line + (f" (last rollback: {record.reason})" if record.reason else "")
    return (
        f"{record.function}: {record.canary} serves {record.canary_share:.1%} of jobs "
        f"(canary), {stable} the rest"
    )


def _change(nats_url: str, function: str, step: Callable[[ModelRollout], ModelRollout]) -> None:
    async def act(store: ModelStore, nc: NATS) -> ModelRollout:
        return await store.change(function, step)

    typer.echo(describe(_with_store(nats_url, act)))


def push(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The .onnx file.")
    ],
    function: Annotated[
        str, typer.Option("--function", "-f", help="The function it is a model of.")
    ],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
) -> None:
    """Store FILE as a new version of a function's model.

    The version is the file's content hash; nothing serves it until `surge models rollout`.
    """

    async def act(store: ModelStore, nc: NATS) -> str:
        return await store.push(function, file)

    version = _with_store(nats_url, act, create=True)
    typer.echo(f"pushed {file.name} as {function} version {version}")


def list_(
    function: Annotated[
        str | None, typer.Option("--function", "-f", help="Only this function.")
    ] = None,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line.")] = False,
) -> None:
    """Pushed model versions, per function, and which of them serve."""

    async def act(store: ModelStore, nc: NATS) -> list[ModelRollout]:
        names = [function] if function else await _functions(store)
        return [(await store.read(name))[0] for name in names]

    for record in _with_store(nats_url, act):
        if as_json:
            typer.echo(record.model_dump_json())
            continue
        typer.echo(describe(record))
        for pushed in record.versions:
            role = {record.stable: "stable", record.canary: "canary"}.get(pushed.version, "")
            typer.echo(
                f"  {pushed.version}  {pushed.size:>11} B  {pushed.pushed_at:%Y-%m-%d %H:%M}"
                f"  {pushed.source}  {role}".rstrip()
            )


async def _functions(store: ModelStore) -> list[str]:
    from nats.js.errors import NoKeysError

    try:
        return sorted(await store.kv.keys())
    except NoKeysError:
        return []


def rollout(
    function: FunctionArg,
    version: Annotated[
        str,
        typer.Argument(
            metavar="VERSION", help="A pushed version (or a unique prefix of 4+ characters)."
        ),
    ],
    canary: Annotated[
        str, typer.Option("--canary", help="Share of jobs to VERSION: 10%, 0.5%, 100%.")
    ] = "10%",
    nats_url: NatsUrl = DEFAULT_NATS_URL,
) -> None:
    """Send a share of FUNCTION's jobs to VERSION, a canary.

    Workers load and warm it, then swap it in between batches, without a restart. Then
    `surge models promote` or `surge models rollback`.
    """
    try:
        share = parse_share(canary)
    except RolloutError as exc:
        raise typer.BadParameter(str(exc), param_hint="--canary") from None
    _change(nats_url, function, lambda record: record.canary_of(version, share))


def promote(function: FunctionArg, nats_url: NatsUrl = DEFAULT_NATS_URL) -> None:
    """Finish the rollout: the canary version serves every job of FUNCTION."""
    _change(nats_url, function, lambda record: record.promoted())


def rollback(function: FunctionArg, nats_url: NatsUrl = DEFAULT_NATS_URL) -> None:
    """Undo the rollout: the stable version serves every job of FUNCTION again."""
    _change(nats_url, function, lambda record: record.rolled_back("by hand"))


def status(
    function: FunctionArg,
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    workers: Annotated[
        float,
        typer.Option(
            "--workers",
            metavar="SECONDS",
            help="Also listen this long to the workers' heartbeats: what each one serves.",
        ),
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="The record as JSON.")] = False,
) -> None:
    """What serves FUNCTION now, and the rollout's recent history."""

    async def act(store: ModelStore, nc: NATS) -> tuple[ModelRollout, dict[str, list[str]]]:
        record = (await store.read(function))[0]
        return record, await _heard(nc, function, workers) if workers > 0 else {}

    record, serving = _with_store(nats_url, act)
    if as_json:
        typer.echo(json.dumps(record.model_dump(mode="json"), indent=2))
        return
    typer.echo(describe(record))
    for line in record.history:
        typer.echo(f"  {line}")
    for worker, versions in sorted(serving.items()):
        typer.echo(f"worker {worker}: {' + '.join(versions) or 'not serving yet'}")
    if workers > 0 and not serving:
        typer.echo(f"no {function} worker heard in {workers:g} s")


async def _heard(nc: NATS, function: str, seconds: float) -> dict[str, list[str]]:
    """Each live worker of `function` heard within `seconds`: the versions it serves."""
    from function.commands.workers import WorkerSightings

    sightings = await WorkerSightings.listen(nc, function)
    try:
        await asyncio.sleep(seconds)
    finally:
        await sightings.close()
    return {beat.worker_id: beat.model_versions for beat in sightings.alive()}


def add_rollout_commands(models_app: typer.Typer) -> None:
    """Mount these commands on `surge models`."""
    models_app.command("push")(push)
    models_app.command("list")(list_)
    models_app.command("rollout")(rollout)
    models_app.command("promote")(promote)
    models_app.command("rollback")(rollback)
    models_app.command("status")(status)
