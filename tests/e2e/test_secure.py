"""Surge on a secured NATS: every credential kind, mutual TLS, and clear refusals.

Real nats-server with authorization, operator-mode JWTs and TLS; keys and certificates
are made in the test (tests/nats_security.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest
from nats.aio.msg import Msg

from function.client import SurgeClient
from function.contract.nats_auth import NatsAuth, NatsConnectError
from function.contract.settings import heartbeat_subject
from function.contract.wire import JobStatus
from function.local.nats_server import EmbeddedNats, free_port
from function.local.throwaway_pki import Pki, make_pki
from function.transport.connect import open_nats
from function.transport.connection import ConnectionHealth
from function.worker import Worker
from scaler.hub import ScalerHub
from tests.helpers import png_bytes, tiny_settings
from tests.nats_security import new_nkey, operator_setup

pytestmark = pytest.mark.nats

PASSWORD = "hunter2-not-in-any-log"
USERS = f'authorization {{ users = [ {{ user: alice, password: "{PASSWORD}" }} ] }}\n'


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def secure_server(tmp_path: Path, pki: Pki) -> Iterator[EmbeddedNats]:
    """Mutual TLS (client certificates verified) and a user with a password."""
    config = pki.server_tls(verify_clients=True) + USERS
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        yield server


def _secret_file(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o400)
    return path


def _alice(folder: Path, pki: Pki, password: str = PASSWORD) -> NatsAuth:
    return NatsAuth(
        user="alice",
        password_file=_secret_file(folder, "password", password),
        tls_ca=pki.ca,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
    )


async def test_a_job_runs_end_to_end_over_mutual_tls_with_a_password(
    secure_server: EmbeddedNats,
    pki: Pki,
    tmp_path: Path,
    model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    auth = _alice(tmp_path, pki)
    worker = Worker(tiny_settings(secure_server.url, model_dir), auth=auth)
    await worker.start()
    try:
        async with await SurgeClient.connect(secure_server.url, auth) as client:
            beats: list[bytes] = []

            async def keep(msg: Msg) -> None:
                beats.append(msg.data)

            await client.nc.subscribe(heartbeat_subject("tiny"), cb=keep)
            inbox = await client.inbox()
            job = await client.submit(png_bytes(), function="tiny", reply_to=inbox.subject)
            results = await inbox.wait([job], timeout=15)
            assert results[job].status is JobStatus.OK
            for _ in range(50):
                if beats:
                    break
                await asyncio.sleep(0.1)
            assert beats and all(PASSWORD.encode() not in beat for beat in beats)
    finally:
        await worker.stop(timeout=10)
    assert "user 'alice' with a password, mutual TLS" in caplog.text
    assert PASSWORD not in caplog.text


async def _round_trip(url: str, auth: NatsAuth) -> None:
    nc = await open_nats(url, auth, name="test", wait_s=5)
    try:

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        sub = await nc.subscribe("echo", cb=echo)
        reply = await nc.request("echo", b"ping", timeout=5)
        assert reply.data == b"ping"
        await sub.unsubscribe()
    finally:
        await nc.close()


async def test_a_creds_file_connects_in_operator_mode(tmp_path: Path) -> None:
    config, creds = operator_setup(tmp_path / "op")
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        await _round_trip(server.url, NatsAuth(creds=creds))


async def test_an_nkey_seed_connects(tmp_path: Path) -> None:
    key = new_nkey(nkeys.PREFIX_BYTE_USER)
    seed = tmp_path / "user.nk"
    seed.write_bytes(key.seed)
    config = f'authorization {{ users = [ {{ nkey: "{key.public_key.decode()}" }} ] }}\n'
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        await _round_trip(server.url, NatsAuth(nkey=seed))


async def test_a_token_file_connects(tmp_path: Path) -> None:
    config = 'authorization { token: "t0k3n-xyz" }\n'
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        await _round_trip(server.url, NatsAuth(token_file=_secret_file(tmp_path, "t", "t0k3n-xyz")))


async def _refused(url: str, auth: NatsAuth) -> str:
    """The one line a refused connection gives; it must not wait for `wait_s` (60 s)."""
    with pytest.raises(NatsConnectError) as caught:
        await asyncio.wait_for(open_nats(url, auth, name="test", wait_s=60), 20)
    return str(caught.value)


async def test_a_wrong_password_is_refused_at_once_without_echoing_it(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    line = await _refused(secure_server.url, _alice(tmp_path, pki, password="wrong-guess-42"))
    assert "refused the credentials" in line and "user 'alice'" in line
    assert "wrong-guess-42" not in line and PASSWORD not in line


async def test_an_expired_jwt_is_refused(tmp_path: Path) -> None:
    config, creds = operator_setup(tmp_path / "op", user_expires_in_s=-60)
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        line = await _refused(server.url, NatsAuth(creds=creds))
    assert "refused the credentials" in line and str(creds) in line


async def test_an_unknown_nkey_is_refused(tmp_path: Path) -> None:
    known, other = new_nkey(nkeys.PREFIX_BYTE_USER), new_nkey(nkeys.PREFIX_BYTE_USER)
    seed = tmp_path / "other.nk"
    seed.write_bytes(other.seed)
    config = f'authorization {{ users = [ {{ nkey: "{known.public_key.decode()}" }} ] }}\n'
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config) as server:
        line = await _refused(server.url, NatsAuth(nkey=seed))
    assert "refused the credentials" in line and other.seed.decode() not in line


async def test_an_untrusted_server_certificate_is_refused(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    auth = _alice(tmp_path, pki).model_copy(update={"tls_ca": pki.other_ca})
    line = await _refused(secure_server.url, auth)
    assert "not trusted" in line and "SURGE_NATS_TLS_CA" in line


async def test_a_missing_client_certificate_is_refused(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    auth = _alice(tmp_path, pki).model_copy(update={"tls_cert": None, "tls_key": None})
    line = await _refused(secure_server.url, auth)
    assert "TLS failed" in line


async def test_unusable_settings_fail_before_connecting(tmp_path: Path) -> None:
    line = await _refused("nats://127.0.0.1:1", NatsAuth(creds=tmp_path / "missing.creds"))
    assert "unusable" in line and "missing.creds" in line


async def test_the_scaler_connects_with_the_same_settings(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    hub = await ScalerHub.connect(secure_server.url, auth=_alice(tmp_path, pki))
    await hub.close()


def _surge(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "function", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        check=False,
    )


def test_the_cli_takes_credential_flags_and_fails_in_one_line(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    flags = ["--user", "alice", "--tls-ca", str(pki.ca)]
    flags += ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
    good = _secret_file(tmp_path, "good", PASSWORD)
    ok = _surge(
        [*flags, "--password-file", str(good), "result", "no-such-job"],
        {"SURGE_NATS_URL": secure_server.url},
    )
    assert ok.returncode == 1 and "no stored result" in ok.stderr, ok.stderr
    bad = _secret_file(tmp_path, "bad", "not-the-password")
    refused = _surge(
        [*flags, "--password-file", str(bad), "result", "no-such-job"],
        {"SURGE_NATS_URL": secure_server.url},
    )
    assert refused.returncode == 2
    assert "refused the credentials" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) <= 3
    assert "not-the-password" not in refused.stderr + refused.stdout


def test_a_worker_with_a_wrong_password_exits_instead_of_retrying(
    secure_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    env = {
        "SURGE_NATS_URL": secure_server.url,
        "SURGE_FUNCTION": "tiny",
        "SURGE_HTTP_PORT": str(free_port()),
        "SURGE_NATS_USER": "alice",
        "SURGE_NATS_PASSWORD_FILE": str(_secret_file(tmp_path, "bad", "not-the-password")),
        "SURGE_NATS_TLS_CA": str(pki.ca),
        "SURGE_NATS_TLS_CERT": str(pki.client_cert),
        "SURGE_NATS_TLS_KEY": str(pki.client_key),
    }
    done = _surge(["worker"], env, timeout=60)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "refused the credentials" in output
    assert "Traceback" not in output and "not-the-password" not in output


def _exports(log: Path, want: str, timeout: float = 30) -> dict[str, str]:
    """The `export NAME=value` lines `surge nats` printed, once `want` is among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        found = dict(
            line.strip().removeprefix("export ").partition("=")[::2]
            for line in lines
            if line.strip().startswith("export ")
        )
        if want in found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {want} in {log.read_text() if log.exists() else 'nothing'}")


def test_surge_nats_secure_makes_a_server_only_its_credentials_open(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, "-m", "function", "nats", "--secure", "--port", str(port)]
    args += ["--monitor-port", str(free_port()), "--store-dir", str(tmp_path / "store")]
    args += ["--secrets-dir", str(tmp_path / "secrets"), "--tenants", "tenant-a"]
    log = tmp_path / "nats.err"
    with log.open("w") as err:
        server = subprocess.Popen(args, stderr=err, env={**os.environ, "COLUMNS": "300"})
    try:
        env = _exports(log, "SURGE_NATS_TLS_KEY")
        assert env["SURGE_NATS_URL"] == f"nats://127.0.0.1:{port}"
        found = _surge(["result", "no-such-job"], env)
        assert found.returncode == 1 and "no stored result" in found.stderr, found.stderr
        tenant = {
            **env,
            "SURGE_TENANT": "tenant-a",
            "SURGE_NATS_USER": "tenant-a",
            "SURGE_NATS_PASSWORD_FILE": str(tmp_path / "secrets" / "tenant-a.password"),
        }
        scoped = _surge(["result", "no-such-job"], tenant)
        assert scoped.returncode == 1 and "no stored result" in scoped.stderr, scoped.stderr
        bare = {"SURGE_NATS_URL": env["SURGE_NATS_URL"]}
        refused = _surge(["result", "no-such-job"], bare)
        assert refused.returncode == 2 and "TLS" in refused.stderr, refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_an_absent_server_is_given_up_after_wait_s() -> None:
    """Before, one first connect tried each server 60 times, 2 s apart (120 s)."""
    with pytest.raises(NatsConnectError, match=r"no NATS server answered .* within 1 s"):
        await asyncio.wait_for(
            open_nats(f"nats://127.0.0.1:{free_port()}", NatsAuth(), name="t", wait_s=1), 15
        )


async def test_failed_first_attempts_are_not_a_lost_connection() -> None:
    """A server that accepts and hangs up must not fire the worker's closed callback:
    before, it marked the connection fatal and `surge worker` exited at once."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fatal: list[str] = []
    health = ConnectionHealth(on_fatal=fatal.append)
    try:
        with pytest.raises(NatsConnectError):
            await open_nats(
                f"nats://127.0.0.1:{port}", NatsAuth(), name="t", wait_s=1.5, **health.callbacks()
            )
    finally:
        server.close()
        await server.wait_closed()
    assert fatal == [] and health.fatal is None


@pytest.mark.parametrize("kind", ["password", "token"])
async def test_a_rotated_secret_file_is_read_again_at_reconnect(tmp_path: Path, kind: str) -> None:
    """A Kubernetes Secret rotated under a running worker: the next connection uses it."""

    def config(secret: str) -> str:
        if kind == "token":
            return f'authorization {{ token: "{secret}" }}\n'
        return f'authorization {{ users = [ {{ user: "w", password: "{secret}" }} ] }}\n'

    secret = tmp_path / "secret"
    secret.write_text("first-secret\n")
    auth = (
        NatsAuth(token_file=secret) if kind == "token" else NatsAuth(user="w", password_file=secret)
    )
    server = EmbeddedNats(store_dir=tmp_path / "nats", extra_config=config("first-secret")).start()
    back = asyncio.Event()

    async def reconnected() -> None:
        back.set()

    try:
        nc = await open_nats(server.url, auth, name="rotation", reconnected_cb=reconnected)
        server.stop()
        secret.write_text("second-secret\n")
        server.extra_config = config("second-secret")
        server.start()
        await asyncio.wait_for(back.wait(), 15)  # nats-py waits 2 s between attempts
        await nc.flush(timeout=5)
        await nc.close()
    finally:
        server.stop()
