"""manifests/nats/accounts.conf: the account and users of a secured, multi-tenant Surge.

The fragment passes `nats-server -t`, and a typo fails it. On a real nats-server started
with it, the topology is made as in a cluster: NACK, with its own user, applies the
NACK resources of `overlays/knative-secure` (as tests/manifests/nack.py says NACK
would), then the worker starts on them. Each user (worker, scaler, NACK, each tenant)
may then do what Surge needs and is refused the rest, and each tenant's quota from
components/tenants is enforced by the server.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from nats.js.errors import APIError

from function.contract.quota import quota_refused
from function.contract.rollout import MODEL_FILES_BUCKET, MODELS_BUCKET, PushedVersion
from function.contract.settings import (
    DEFAULT_FUNCTION,
    JOBS_STREAM,
    RESULTS_STREAM,
    Priority,
    WorkerSettings,
    call_subject,
    consumer_name,
    control_subject,
    dead_subject,
    events_subject,
    heartbeat_subject,
    job_subject,
    result_subject,
    tenant_inbox_prefix,
    tenant_stream,
)
from function.contract.webhooks import WEBHOOKS_BUCKET
from function.local.nats_server import find_nats_server
from function.transport.modelstore import ModelStore
from function.transport.tenants import ensure_tenant_consumers, list_tenants, quota_of
from function.transport.topology import ensure_topology
from scaler.prewarm import load_plans
from scaler.watcher import FunctionWatcher
from tests.manifests import jetstream_checks, nack
from tests.manifests.kube import MANIFESTS, rendered
from tests.manifests.secured_nats import Secured, connect, secured_server, users_in

ACCOUNTS: Final = MANIFESTS / "nats" / "accounts.conf"
SECURE: Final = "knative-secure"  # the overlay whose NACK resources the server gets
TENANTS: Final = ("tenant-a", "tenant-b")
FUNCTION: Final = DEFAULT_FUNCTION
SETTINGS: Final = WorkerSettings(function=FUNCTION)


# --- nats-server -t ---------------------------------------------------------------------


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


def test_accounts_name_the_users_with_distinct_keys() -> None:
    users = users_in(ACCOUNTS.read_text())
    assert set(users) == {"worker", "scaler", "nack", *TENANTS}
    assert len(set(users.values())) == len(users)


def test_every_tenant_user_has_a_stream_and_no_other() -> None:
    assert jetstream_checks.declared_tenants(rendered(SECURE)) == sorted(TENANTS)


# --- the accounts on a real nats-server -------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    folder = tmp_path_factory.mktemp("secured")
    with secured_server(folder, ACCOUNTS.read_text(), TENANTS) as server:
        asyncio.run(_make_topology(server))
        yield server


async def _make_topology(secured: Secured) -> None:
    """NACK applies the resources (twice: created, then updated, as at a later reconcile),
    then a worker starts with its own permissions (streams, consumers, bucket)."""
    controller = await connect(secured, "nack")
    try:
        for _ in range(2):
            await nack.apply(controller.nc.jetstream(), rendered(SECURE))
        await controller.nc.flush(timeout=2)
        assert controller.errors == []
    finally:
        await controller.close()
    worker = await connect(secured, "worker")
    try:
        await ensure_topology(worker.nc.jetstream(), SETTINGS)
    finally:
        await worker.close()


NORMAL, HIGH = Priority.NORMAL, Priority.HIGH
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer_name(FUNCTION, NORMAL)}"
TENANT_A = tenant_stream("tenant-a")

# (user, publish or subscription, subject, allowed)
RULES: Final = [
    ("worker", "publish", result_subject("job-1", "tenant-a"), True),
    ("worker", "publish", dead_subject(FUNCTION), True),
    ("worker", "publish", heartbeat_subject(FUNCTION), True),
    ("worker", "publish", f"{tenant_inbox_prefix('tenant-a')}.reply", True),
    ("worker", "publish", f"{tenant_inbox_prefix('tenant-b')}.reply", True),
    ("worker", "publish", "_INBOX.reply", True),
    # calls and POST /v1/jobs/{function}: any job, open or a tenant's on its behalf
    ("worker", "publish", job_subject(NORMAL, FUNCTION), True),
    ("worker", "publish", job_subject(HIGH, FUNCTION), True),
    ("worker", "publish", job_subject(HIGH, FUNCTION, "tenant-a"), True),
    ("worker", "publish", f"{job_subject(HIGH, FUNCTION, 'tenant-a')}.x", False),
    ("worker", "publish", "surge.jobs.x", False),
    ("worker", "publish", f"$KV.{WEBHOOKS_BUCKET}.tenant-a.job-1", True),
    ("worker", "publish", "$KV.surge-prewarm.x", False),
    ("tenant-a", "publish", f"$KV.{WEBHOOKS_BUCKET}.tenant-a.job-1", False),
    ("worker", "publish", f"$KV.{MODELS_BUCKET}.{FUNCTION}", True),  # a canary's rollback
    ("worker", "publish", f"$O.{MODEL_FILES_BUCKET}.C.chunk", False),  # it reads files only
    ("tenant-a", "publish", f"$KV.{MODELS_BUCKET}.{FUNCTION}", False),
    ("tenant-a", "publish", f"$O.{MODEL_FILES_BUCKET}.C.chunk", False),
    ("tenant-a", "publish", f"$JS.API.STREAM.INFO.KV_{MODELS_BUCKET}", False),
    ("scaler", "publish", f"$KV.{MODELS_BUCKET}.{FUNCTION}", False),
    ("worker", "subscription", call_subject(FUNCTION), True),
    ("worker", "subscription", control_subject(FUNCTION), True),
    ("worker", "subscription", control_subject(FUNCTION, "tenant-a"), True),
    ("worker", "publish", control_subject(FUNCTION, "tenant-a"), True),
    ("worker", "publish", events_subject("job-1", "tenant-a"), True),
    ("tenant-a", "publish", control_subject(FUNCTION, "tenant-a"), False),
    ("tenant-a", "subscription", events_subject("job-1", "tenant-a"), False),
    ("scaler", "subscription", heartbeat_subject(FUNCTION), True),
    ("scaler", "publish", heartbeat_subject(FUNCTION), False),
    ("scaler", "subscription", "surge.results.>", False),
    ("scaler", "publish", f"$JS.API.STREAM.CREATE.{JOBS_STREAM}", False),
    ("scaler", "publish", f"$JS.API.STREAM.PURGE.{JOBS_STREAM}", False),
    ("scaler", "publish", f"$JS.API.CONSUMER.DELETE.{JOBS_STREAM}.x", False),
    ("scaler", "publish", NEXT, False),
    ("scaler", "publish", "$JS.API.STREAM.LIST", True),
    ("scaler", "publish", f"$JS.API.CONSUMER.INFO.{TENANT_A}.x", True),
    ("scaler", "publish", f"$JS.API.CONSUMER.CREATE.{TENANT_A}.x", False),
    ("scaler", "publish", f"$JS.API.STREAM.UPDATE.{TENANT_A}", False),
    ("nack", "publish", f"$JS.API.STREAM.INFO.{TENANT_A}", True),
    ("nack", "publish", f"$JS.API.STREAM.CREATE.{tenant_stream('tenant-c')}", True),
    ("nack", "publish", f"$JS.API.STREAM.UPDATE.{tenant_stream('tenant-c')}", True),
    ("nack", "publish", f"$JS.API.CONSUMER.INFO.{TENANT_A}.x", True),
    ("nack", "publish", f"$JS.API.CONSUMER.CREATE.{TENANT_A}.x.surge.jobs.high.x.tenant-a", True),
    ("nack", "publish", f"$JS.API.CONSUMER.DURABLE.CREATE.{TENANT_A}.x", True),
    ("nack", "publish", f"$JS.API.CONSUMER.DELETE.{TENANT_A}.x", True),
    ("nack", "subscription", "_INBOX.>", True),
    ("nack", "publish", f"$JS.API.STREAM.DELETE.{TENANT_A}", False),
    ("nack", "publish", f"$JS.API.STREAM.PURGE.{JOBS_STREAM}", False),
    ("nack", "publish", f"$JS.API.STREAM.MSG.GET.{JOBS_STREAM}", False),
    ("nack", "publish", f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.surge.results.x", False),
    ("nack", "publish", NEXT, False),
    ("nack", "publish", "$JS.ACK.x", False),
    ("nack", "publish", job_subject(NORMAL, FUNCTION), False),
    ("nack", "publish", result_subject("job-1"), False),
    ("nack", "subscription", "surge.>", False),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION, "tenant-a"), True),
    ("tenant-a", "publish", job_subject(HIGH, FUNCTION, "tenant-a"), True),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION, "tenant-b"), False),
    ("tenant-a", "publish", job_subject(NORMAL, FUNCTION), False),
    ("tenant-a", "publish", job_subject(NORMAL, "nsfw", "tenant-a"), False),
    ("tenant-a", "publish", result_subject("job-1", "tenant-a"), False),
    ("tenant-a", "publish", dead_subject(FUNCTION), False),
    ("tenant-a", "publish", heartbeat_subject(FUNCTION), False),
    ("tenant-a", "publish", f"$JS.API.STREAM.INFO.{JOBS_STREAM}", False),
    ("tenant-a", "publish", f"$JS.API.STREAM.INFO.{TENANT_A}", False),
    ("tenant-a", "publish", f"$JS.API.STREAM.PURGE.{TENANT_A}", False),
    ("tenant-a", "publish", f"$JS.API.STREAM.UPDATE.{TENANT_A}", False),
    ("tenant-a", "publish", NEXT, False),
    ("tenant-a", "publish", f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.surge.results.x", False),
    (
        "tenant-a",
        "publish",
        f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.{result_subject('job-1', 'tenant-b')}",
        False,
    ),
    ("tenant-a", "publish", "$O.surge-blobs-tenant-a.C.chunk", True),
    ("tenant-a", "publish", "$JS.API.STREAM.INFO.OBJ_surge-blobs-tenant-a", True),
    ("tenant-a", "publish", "$JS.API.STREAM.PURGE.OBJ_surge-blobs-tenant-a", True),
    ("tenant-a", "publish", "$O.surge-blobs-tenant-b.C.chunk", False),
    ("tenant-a", "publish", "$O.surge-blobs.C.chunk", False),
    ("tenant-a", "publish", "$JS.API.STREAM.INFO.OBJ_surge-blobs-tenant-b", False),
    ("tenant-a", "publish", "$JS.API.STREAM.DELETE.OBJ_surge-blobs-tenant-a", False),
    ("tenant-a", "publish", "$JS.API.STREAM.LIST", False),
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
        await session.close()


@pytest.mark.nats
async def test_a_tenant_submits_and_reads_only_its_own(secured: Secured) -> None:
    """tenant-a's job is stored on its own stream (the ack comes to its inbox), the
    worker's reply and the stored result reach it; tenant-b sees none of it."""
    a, b = await connect(secured, "tenant-a"), await connect(secured, "tenant-b")
    worker = await connect(secured, "worker")
    try:
        ack = await a.nc.jetstream().publish(
            job_subject(NORMAL, FUNCTION, "tenant-a"), b"image", headers={"Nats-Msg-Id": "j-1"}
        )
        assert ack.stream == TENANT_A
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
            await session.close()


@pytest.mark.nats
async def test_the_server_enforces_a_tenants_quota(secured: Secured) -> None:
    """A job over tenant-b's max_payload (components/tenants) is refused at publish."""
    spec = jetstream_checks.stream_specs(rendered(SECURE))[tenant_stream("tenant-b")]
    b = await connect(secured, "tenant-b")
    try:
        with pytest.raises(APIError) as refused:
            await b.nc.jetstream().publish(
                job_subject(NORMAL, FUNCTION, "tenant-b"), b"x" * (spec["maxMsgSize"] + 1)
            )
        assert quota_refused(refused.value.err_code) == "max_payload"
    finally:
        await b.close()


@pytest.mark.nats
async def test_the_worker_finds_the_tenants_nack_made(secured: Secured) -> None:
    """`list_tenants` (what workers follow) reads each tenant's quota from its stream."""
    specs = jetstream_checks.stream_specs(rendered(SECURE))
    worker = await connect(secured, "worker")
    try:
        found = await list_tenants(worker.nc.jetstream())
    finally:
        await worker.close()
    assert found == {t: quota_of(nack.stream_config(specs[tenant_stream(t)])) for t in TENANTS}


@pytest.mark.nats
async def test_the_worker_takes_the_tenant_consumers_nack_made(secured: Secured) -> None:
    worker = await connect(secured, "worker")
    try:
        for tenant in TENANTS:
            await ensure_tenant_consumers(worker.nc.jetstream(), SETTINGS, tenant)
    finally:
        await worker.close()


@pytest.mark.nats
async def test_the_scaler_counts_the_tenants_nack_made(secured: Secured) -> None:
    """With its read-only user the scaler finds both tenants and watches their consumers."""
    scaler = await connect(secured, "scaler")
    try:
        watcher = FunctionWatcher(scaler.nc, FUNCTION, worker=SETTINGS)
        await watcher.start()
        await watcher.stop()
        assert watcher.tenants == TENANTS
    finally:
        await scaler.close()


@pytest.mark.nats
async def test_the_scaler_watches_with_its_read_only_user(secured: Secured) -> None:
    """The scaler's real watcher starts (stream and consumer info), polls, takes heartbeats
    and reads pre-warm plans, all without a refusal."""
    scaler = await connect(secured, "scaler")
    try:
        watcher = FunctionWatcher(scaler.nc, FUNCTION, worker=SETTINGS)
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
        await scaler.close()


@pytest.mark.nats
async def test_the_worker_follows_a_rollout_and_writes_its_rollback(secured: Secured) -> None:
    """With its user, a worker opens the model buckets, reads and watches its function's
    record, and writes a canary's rollback (compare-and-set); it cannot store files."""
    worker = await connect(secured, "worker")
    try:
        store = await ModelStore.open(worker.nc.jetstream(), create=True)
        pushed = PushedVersion(version="1" * 16, size=1)
        await store.change(FUNCTION, lambda r: r.pushed(pushed).canary_of(pushed.version, 0.1))
        back = await store.change(FUNCTION, lambda r: r.rolled_back("canary failed"))
        assert (back.canary, back.reason) == (None, "canary failed")
        following = store.follow(FUNCTION)
        assert (await anext(following)).reason == "canary failed"
        await following.aclose()
        await worker.nc.publish(f"$O.{MODEL_FILES_BUCKET}.C.chunk", b"x")
        assert await worker.refused("publish", f"$O.{MODEL_FILES_BUCKET}.C.chunk")
    finally:
        await worker.close()
