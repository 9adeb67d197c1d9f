"""Surge on a secured NATS: components/nats-auth, and the accounts in manifests/nats.

The component is checked in every overlay (on in `knative-secure` and in a `raw`
overlay made with it here, off in the others); the nats-server configuration fragment
passes `nats-server -t`, and a real nats-server started with it lets each user do what
Surge needs and refuses the rest.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nats
import nkeys  # type: ignore[import-untyped]
import pytest
import yaml
from nats.aio.client import Client as NATS

from function.contract.settings import (
    DEFAULT_FUNCTION,
    JOBS_STREAM,
    RESULTS_STREAM,
    Priority,
    WorkerSettings,
    consumer_name,
    dead_subject,
    heartbeat_subject,
    job_subject,
    result_subject,
    tenant_inbox_prefix,
)
from function.local.nats_server import EmbeddedNats, find_nats_server
from function.transport.topology import ensure_topology
from scaler.prewarm import load_plans
from scaler.watcher import FunctionWatcher
from tests.manifests import nats_auth_checks
from tests.manifests.kube import (
    MANIFESTS,
    OVERLAYS,
    SECURE_OVERLAYS,
    Doc,
    containers,
    render,
    rendered,
    validate_document,
    workloads,
)
from tests.nats_security import new_nkey

ACCOUNTS: Final = MANIFESTS / "nats" / "accounts.conf"
COMPONENT: Final = "../../components/nats-auth"
TENANTS: Final = ("tenant-a", "tenant-b")
FUNCTION: Final = DEFAULT_FUNCTION
Mutation = Callable[[list[Doc]], None]


# --- the component --------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_secure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Doc, ...]:
    """The raw overlay with components/nats-auth, as a user would add it."""
    copied = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, copied)
    overlay = copied / "overlays" / "raw-secure"
    overlay.mkdir()
    kustomization = {"resources": ["../raw"], "components": [COMPONENT]}
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tuple(render(overlay))


def test_secure_overlays_use_the_component() -> None:
    for overlay in OVERLAYS:
        text = (MANIFESTS / "overlays" / overlay / "kustomization.yaml").read_text()
        components = yaml.safe_load(text).get("components", [])
        assert (COMPONENT in components) == (overlay in SECURE_OVERLAYS), overlay


def test_nats_auth_matches_the_overlay(overlay: str, docs: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_nats_auth(docs, secure=overlay in SECURE_OVERLAYS) == []


def test_no_secret_value_is_rendered(docs: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_no_secret_values(docs) == []


def test_the_component_works_on_raw_too(raw_secure: tuple[Doc, ...]) -> None:
    assert nats_auth_checks.check_nats_auth(raw_secure, secure=True) == []
    assert nats_auth_checks.check_no_secret_values(raw_secure) == []
    assert [e for doc in raw_secure for e in validate_document(doc)] == []


@pytest.mark.parametrize("overlay", SECURE_OVERLAYS)
def test_worker_and_scaler_read_the_secret_read_only(overlay: str) -> None:
    clients = nats_auth_checks.nats_clients(rendered(overlay))
    assert {tuple(c["command"]) for _, _, c in clients} == nats_auth_checks.NATS_CLIENT_COMMANDS
    for _, pod, container in clients:
        env = {v["name"]: v.get("value") for v in container["env"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/surge/nats"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount["readOnly"] is True
        assert volume["secret"]["secretName"] == "surge-nats-client"
        assert volume["secret"].get("optional", False) is False
        assert env["SURGE_NATS_CREDS"] == "/etc/surge/nats/user.creds"
        assert env["SURGE_NATS_TLS_CA"] == "/etc/surge/nats/ca.crt"
        assert env["SURGE_NATS_TLS_CERT"] == "/etc/surge/nats/tls.crt"
        assert env["SURGE_NATS_TLS_KEY"] == "/etc/surge/nats/tls.key"


def _without_nats_auth(docs: tuple[Doc, ...]) -> str:
    """The rendering with what components/nats-auth adds taken out, comparable as text."""
    stripped = copy.deepcopy(list(docs))
    for _, pod in workloads(stripped):
        secret = nats_auth_checks.client_secret_volumes(pod)
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in secret]
        for c in containers(pod):
            c["env"] = [v for v in c.get("env", []) if v["name"] not in nats_auth_checks.SECURE_ENV]
            c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] not in secret]
    text = json.dumps(stripped, sort_keys=True).replace("tls://", "nats://")
    return re.sub(r"surge-settings-[a-z0-9]+", "surge-settings", text)


def test_the_component_changes_nothing_else(raw_secure: tuple[Doc, ...]) -> None:
    assert _without_nats_auth(rendered("knative-secure")) == _without_nats_auth(rendered("knative"))
    assert _without_nats_auth(raw_secure) == _without_nats_auth(rendered("raw"))


# --- broken copies fail -------------------------------------------------------------


def _clients(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    return [(pod, c) for _, pod, c in nats_auth_checks.nats_clients(docs)]


def _scaler(docs: list[Doc]) -> tuple[Doc, Doc]:
    return next((p, c) for p, c in _clients(docs) if c["command"][1] == "scaler")


def _worker(docs: list[Doc]) -> tuple[Doc, Doc]:
    return next((p, c) for p, c in _clients(docs) if c["command"][1] == "worker")


def _secret_volume(pod: Doc) -> Doc:
    volume: Doc = next(v for v in pod["volumes"] if v["name"] == "nats-client")
    return volume


def _drop_env(container: Doc, name: str) -> None:
    container["env"] = [v for v in container["env"] if v["name"] != name]


def _set_url(docs: list[Doc], url: str) -> None:
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("surge-settings"):
            doc["data"]["SURGE_NATS_URL"] = url


def _mount_in_init(docs: list[Doc]) -> None:
    pod, _ = _worker(docs)
    pod["initContainers"][0]["volumeMounts"].append(
        {"name": "nats-client", "mountPath": "/etc/surge/nats", "readOnly": True}
    )


def _mount_in_scaler(docs: list[Doc]) -> None:
    pod, container = _scaler(docs)
    pod["volumes"].append({"name": "nats-client", "secret": {"secretName": "surge-nats-client"}})
    container["volumeMounts"].append(
        {"name": "nats-client", "mountPath": "/etc/surge/nats", "readOnly": True}
    )


SECURE_MUTATIONS: Final[dict[str, tuple[str, Mutation]]] = {
    "mount-writable": (
        "is not readOnly",
        lambda d: next(
            m for m in _scaler(d)[1]["volumeMounts"] if m["name"] == "nats-client"
        ).update(readOnly=False),
    ),
    "optional-secret": (
        "is optional",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(optional=True),
    ),
    "another-secret": (
        "is not in the Secret surge-nats-client",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(secretName="surge-scaler-tls"),
    ),
    "owner-only-files": (
        "cannot read it",
        lambda d: _secret_volume(_worker(d)[0])["secret"].update(defaultMode=0o400),
    ),
    "no-client-key": (
        "['SURGE_NATS_TLS_KEY'] unset",
        lambda d: _drop_env(_scaler(d)[1], "SURGE_NATS_TLS_KEY"),
    ),
    "no-creds-in-the-worker": (
        "unset: it would not authenticate",
        lambda d: _drop_env(_worker(d)[1], "SURGE_NATS_CREDS"),
    ),
    "two-kinds-of-credential": (
        "give one kind of NATS credential",
        lambda d: _worker(d)[1]["env"].append(
            {"name": "SURGE_NATS_NKEY", "value": "/etc/surge/nats/user.nk"}
        ),
    ),
    "plain-url": ("does not insist on TLS", lambda d: _set_url(d, "nats://nats:4222")),
    "init-step-gets-credentials": ("must not get its credentials", _mount_in_init),
    "a-key-inlined": (
        "holds a PEM block",
        lambda d: _scaler(d)[1]["env"].append(
            {"name": "KEY", "value": "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n"}
        ),
    ),
    "a-secret-object": (
        "a Secret in the manifests",
        lambda d: d.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "surge-nats-client"}}
        ),
    ),
}

OPEN_MUTATIONS: Final[dict[str, tuple[str, Mutation]]] = {
    "creds-without-component": (
        "set without components/nats-auth",
        lambda d: _worker(d)[1]["env"].append(
            {"name": "SURGE_NATS_CREDS", "value": "/etc/surge/nats/user.creds"}
        ),
    ),
    "secret-without-component": ("without components/nats-auth", _mount_in_scaler),
    "a-jwt-inlined": (
        "holds a JWT",
        lambda d: _set_url(d, "nats://eyJ0eXAiOiJKV1Qi.eyJqdGkiOiJBQkNE.c2lnbmF0dXJl@nats:4222"),
    ),
}


def _errors(docs: list[Doc], *, secure: bool) -> list[str]:
    return nats_auth_checks.check_nats_auth(
        docs, secure=secure
    ) + nats_auth_checks.check_no_secret_values(docs)


@pytest.mark.parametrize(("expected", "mutate"), SECURE_MUTATIONS.values(), ids=SECURE_MUTATIONS)
def test_broken_secure_setup_is_caught(
    raw_secure: tuple[Doc, ...], expected: str, mutate: Mutation
) -> None:
    for docs in (copy.deepcopy(list(rendered("knative-secure"))), copy.deepcopy(list(raw_secure))):
        mutate(docs)
        errors = _errors(docs, secure=True)
        assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(("expected", "mutate"), OPEN_MUTATIONS.values(), ids=OPEN_MUTATIONS)
@pytest.mark.parametrize("overlay", ["knative", "raw"])
def test_broken_open_setup_is_caught(overlay: str, expected: str, mutate: Mutation) -> None:
    docs = copy.deepcopy(list(rendered(overlay)))
    mutate(docs)
    errors = _errors(docs, secure=False)
    assert any(expected in e for e in errors), errors


# --- manifests/nats/accounts.conf: nats-server -t -------------------------------------


def config_test(folder: Path, accounts: str) -> subprocess.CompletedProcess[str]:
    """`nats-server -t` on a server configuration that includes `accounts`, as README shows."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "accounts.conf").write_text(accounts)
    server = folder / "server.conf"
    server.write_text(f'jetstream {{ store_dir: "{folder / "js"}" }}\ninclude ./accounts.conf\n')
    return subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(server)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_accounts_pass_the_servers_config_test(tmp_path: Path) -> None:
    done = config_test(tmp_path, ACCOUNTS.read_text())
    assert done.returncode == 0, done.stdout + done.stderr


TYPOS: Final = {
    "misspelt-field": ("allow: [", "alow: [", "Unknown field name"),
    "bad-subject": ('"surge.dead.>"', '"surge..dead"', "is not a valid subject"),
    "bad-nkey": ('nkey: "U', 'nkey: "X', "Not a valid public nkey"),
    "misspelt-jetstream": ("jetstream: enabled", "jetstrem: enabled", "unknown field"),
}


@pytest.mark.parametrize(("old", "new", "expected"), TYPOS.values(), ids=TYPOS)
def test_a_typo_fails_the_config_test(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = ACCOUNTS.read_text()
    assert old in text
    done = config_test(tmp_path, text.replace(old, new))
    assert done.returncode != 0
    assert expected in done.stdout + done.stderr


def users_in(text: str) -> dict[str, str]:
    """User name (from its `# -- <name>:` comment) -> its example public nkey."""
    found = re.findall(r'# -- ([\w-]+):.*?nkey: "(U[A-Z2-7]{55})"', text, re.DOTALL)
    return dict(found)


def test_accounts_name_the_four_users_with_distinct_keys() -> None:
    users = users_in(ACCOUNTS.read_text())
    assert set(users) == {"worker", "scaler", *TENANTS}
    assert len(set(users.values())) == len(users)


# --- the accounts on a real nats-server ----------------------------------------------


@dataclass
class Secured:
    """A nats-server running manifests/nats/accounts.conf with fresh keys for each user."""

    url: str
    seeds: dict[str, Path]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    text = ACCOUNTS.read_text()
    seeds = {}
    for user, example in users_in(text).items():
        pair = new_nkey(nkeys.PREFIX_BYTE_USER)
        text = text.replace(example, pair.public_key.decode())
        seeds[user] = folder / f"{user}.nk"
        seeds[user].write_bytes(pair.seed)
    store = folder / "nats"
    store.mkdir()
    (store / "accounts.conf").write_text(text)
    with EmbeddedNats(store_dir=store, extra_config="include ./accounts.conf\n") as server:
        secured = Secured(server.url, seeds)
        asyncio.run(_as_worker(secured, _make_topology))
        yield secured


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


async def connect(secured: Secured, user: str) -> Session:
    session = Session(nc=NATS())

    async def on_error(exc: Exception) -> None:
        session.errors.append(str(exc))

    prefix = tenant_inbox_prefix(user) if user in TENANTS else "_INBOX"
    session.nc = await nats.connect(
        secured.url,
        nkeys_seed=str(secured.seeds[user]),
        inbox_prefix=prefix,
        error_cb=on_error,
        allow_reconnect=False,
    )
    return session


async def _as_worker(secured: Secured, run: Callable[[NATS], Awaitable[None]]) -> None:
    session = await connect(secured, "worker")
    try:
        await run(session.nc)
    finally:
        await session.nc.close()


async def _make_topology(nc: NATS) -> None:
    """What a worker does at start, with the worker's permissions: streams, consumers, bucket."""
    await ensure_topology(nc.jetstream(), WorkerSettings(function=FUNCTION))


NORMAL, HIGH = Priority.NORMAL, Priority.HIGH
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer_name(FUNCTION, NORMAL)}"

# (user, publish or subscription, subject, allowed)
RULES: Final = [
    ("worker", "publish", result_subject("job-1", "tenant-a"), True),
    ("worker", "publish", dead_subject(FUNCTION), True),
    ("worker", "publish", heartbeat_subject(FUNCTION), True),
    ("worker", "publish", f"{tenant_inbox_prefix('tenant-a')}.reply", True),
    ("worker", "publish", f"{tenant_inbox_prefix('tenant-b')}.reply", True),
    ("worker", "publish", "_INBOX.reply", True),
    ("worker", "publish", job_subject(NORMAL, FUNCTION), False),
    ("scaler", "subscription", heartbeat_subject(FUNCTION), True),
    ("scaler", "publish", heartbeat_subject(FUNCTION), False),
    ("scaler", "subscription", "surge.results.>", False),
    ("scaler", "publish", f"$JS.API.STREAM.CREATE.{JOBS_STREAM}", False),
    ("scaler", "publish", f"$JS.API.STREAM.PURGE.{JOBS_STREAM}", False),
    ("scaler", "publish", f"$JS.API.CONSUMER.DELETE.{JOBS_STREAM}.x", False),
    ("scaler", "publish", NEXT, False),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION, "tenant-a"), True),
    ("tenant-a", "publish", job_subject(HIGH, FUNCTION, "tenant-a"), True),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION, "tenant-b"), False),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION), False),
    ("tenant-a", "publish", job_subject(NORMAL, "nsfw", "tenant-a"), False),
    ("tenant-a", "publish", result_subject("job-1", "tenant-a"), False),
    ("tenant-a", "publish", dead_subject(FUNCTION), False),
    ("tenant-a", "publish", heartbeat_subject(FUNCTION), False),
    ("tenant-a", "publish", f"$JS.API.STREAM.INFO.{JOBS_STREAM}", False),
    ("tenant-a", "publish", f"$JS.API.STREAM.PURGE.{JOBS_STREAM}", False),
    ("tenant-a", "publish", NEXT, False),
    ("tenant-a", "publish", f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.surge.results.x", False),
    (
        "tenant-a",
        "publish",
        f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.{result_subject('job-1', 'tenant-b')}",
        False,
    ),
    ("tenant-a", "subscription", f"{tenant_inbox_prefix('tenant-a')}.>", True),
    ("tenant-a", "subscription", f"{tenant_inbox_prefix('tenant-b')}.>", False),
    ("tenant-a", "subscription", "_INBOX.>", False),
    ("tenant-a", "subscription", "surge.results.>", False),
    ("tenant-a", "subscription", "surge.jobs.>", False),
    ("tenant-b", "publish", job_subject(NORMAL, FUNCTION, "tenant-b"), True),
    ("tenant-b", "publish", job_subject(HIGH, FUNCTION, "tenant-b"), False),
    ("tenant-b", "subscription", f"{tenant_inbox_prefix('tenant-a')}.>", False),
]


@pytest.mark.nats
@pytest.mark.parametrize(("user", "verb", "subject", "allowed"), RULES)
async def test_each_user_may_do_what_it_needs_and_no_more(
    secured: Secured, user: str, verb: str, subject: str, allowed: bool
) -> None:
    session = await connect(secured, user)
    try:
        if verb == "publish":
            await session.nc.publish(subject, b"{}")
        else:
            await session.nc.subscribe(subject)
        assert await session.refused(verb, subject) is not allowed, session.errors
    finally:
        await session.nc.close()


@pytest.mark.nats
async def test_a_tenant_submits_and_reads_only_its_own(secured: Secured) -> None:
    """tenant-a's job is stored (the ack comes to its inbox), the worker's reply and the
    stored result reach it; tenant-b sees none of it."""
    a, b = await connect(secured, "tenant-a"), await connect(secured, "tenant-b")
    worker = await connect(secured, "worker")
    try:
        ack = await a.nc.jetstream().publish(
            job_subject(NORMAL, FUNCTION, "tenant-a"), b"image", headers={"Nats-Msg-Id": "j-1"}
        )
        assert ack.stream == JOBS_STREAM
        inbox = f"{tenant_inbox_prefix('tenant-a')}.results"
        replies = await a.nc.subscribe(inbox)
        await a.nc.flush()
        await worker.nc.jetstream().publish(result_subject("j-1", "tenant-a"), b"result")
        await worker.nc.publish(inbox, b"result")
        assert (await replies.next_msg(timeout=2)).data == b"result"
        direct = f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.{result_subject('j-1', 'tenant-a')}"
        assert (await a.nc.request(direct, b"", timeout=2)).data == b"result"
        await b.nc.publish(direct, b"")
        assert await b.refused("publish", direct)
    finally:
        for session in (a, b, worker):
            await session.nc.close()


@pytest.mark.nats
async def test_the_scaler_watches_with_its_read_only_user(secured: Secured) -> None:
    """The scaler's real watcher starts (stream and consumer info), polls, takes heartbeats
    and reads pre-warm plans, all without a refusal."""
    scaler = await connect(secured, "scaler")
    try:
        watcher = FunctionWatcher(scaler.nc, FUNCTION, worker=WorkerSettings(function=FUNCTION))
        await watcher.start()
        try:
            await watcher.poll()
            assert watcher.error is None
            assert await load_plans(scaler.nc.jetstream(), FUNCTION) == []
        finally:
            await watcher.stop()
        await scaler.nc.flush(timeout=2)
        assert scaler.errors == []
    finally:
        await scaler.nc.close()
