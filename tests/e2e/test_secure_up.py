"""`surge up --secure --tenants`: mutual TLS, a NATS user and a job stream per tenant, and
the command lines it prints, which a tenant runs as they are."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from function.cli import full_app
from function.contract.quota import TenantQuota
from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats, free_port
from function.local.secure_stack import add_missing_tenants, secure_stack
from function.transport.connect import open_nats
from function.transport.tenants import add_tenant, list_tenants
from tests.helpers import png_bytes

pytestmark = pytest.mark.nats

runner = CliRunner()


def _printed(log: Path, prefix: str, timeout: float = 60.0) -> str:
    """The first line of `log` that starts with `prefix`, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(prefix):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no {prefix!r} line in {log.read_text()}")


def _surge(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SURGE_NATS_", "SURGE_TEN"))}
    return subprocess.run(
        [sys.executable, "-m", "function", *argv],
        capture_output=True,
        text=True,
        timeout=90,
        env={**clean, **(env or {})},
    )


def test_surge_up_secure_gives_each_tenant_a_user_and_a_stream(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, "-m", "function", "up", "--secure", "--tenants", "acme,globex"]
    args += ["--port", str(port), "--store-dir", str(tmp_path / "store")]
    args += ["--log-dir", str(tmp_path / "logs"), "--secrets-dir", str(tmp_path / "secrets")]
    args += ["-f", "tiny", "--max-workers", "1", "--cooldown", "2"]
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(args, stdout=out, stderr=out, env={**os.environ, "COLUMNS": "300"})
    try:
        line = _printed(log, "tenant acme: surge ")
        argv = shlex.split(line.removeprefix("tenant acme: surge "))
        assert argv[-1] == "IMAGE..." and "--tenant" in argv and "-f" in argv
        image = tmp_path / "photo.png"
        image.write_bytes(png_bytes())
        # The tenant submits at once, as printed: its stream exists, a worker starts from zero.
        answered = _surge([*argv[:-1], "--wait", "--timeout", "60", str(image)])
        assert answered.returncode == 0, answered.stderr
        assert "\tok\t" in answered.stdout

        trusted = {
            name: value
            for name, _, value in (
                row.strip().removeprefix("export ").partition("=")
                for row in log.read_text().splitlines()
                if row.startswith("  export SURGE_NATS_")
            )
        }
        assert trusted["SURGE_NATS_URL"] == f"nats://127.0.0.1:{port}"
        listed = _surge(["tenants", "list", "--json"], trusted)
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(row) for row in listed.stdout.splitlines()]
        assert [row["tenant"] for row in rows] == ["acme", "globex"]
        bare = _surge(["tenants", "list"], {"SURGE_NATS_URL": trusted["SURGE_NATS_URL"]})
        assert bare.returncode == 2 and "TLS" in bare.stderr, bare.stderr
    finally:
        up.terminate()
        up.wait(timeout=60)


def test_surge_up_refuses_what_it_cannot_secure(tmp_path: Path) -> None:
    app = full_app()
    secrets = ["--secrets-dir", str(tmp_path / "secrets")]
    cases = {
        ("up", "--tenants", "acme"): "tenants need --secure",
        ("up", "--secure", "--cluster", "3"): "--secure runs one node",
        ("up", "--secure", "--tenants", "acme,surge"): "not tenant ids: surge",
        ("up", "--secure", "--tenants", "acme,Bad"): "not tenant ids: Bad",
    }
    for args, problem in cases.items():
        refused = runner.invoke(app, [*args, *secrets], env={"COLUMNS": "300"})
        assert refused.exit_code == 2, refused.output
        assert problem in refused.output


def test_the_secured_stacks_credentials_come_from_its_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGE_NATS_CREDS", str(tmp_path / "someone-elses.creds"))
    stack = secure_stack(tmp_path, "nats://127.0.0.1:4222", ["acme"])
    auth = stack.auth()
    assert auth.creds is None and auth.user == "surge"
    assert auth.problems() == []
    acme = stack.tenants["acme"]
    assert acme["SURGE_TENANT"] == "acme" and acme["SURGE_NATS_USER"] == "acme"
    assert Path(acme["SURGE_NATS_PASSWORD_FILE"]).read_text().strip() in stack.server_config
    again = secure_stack(tmp_path, "nats://127.0.0.1:4222", ["acme"])
    assert again.server_config == stack.server_config  # the secrets are made once
    with pytest.raises(ValueError, match="surge"):
        secure_stack(tmp_path, "nats://127.0.0.1:4222", ["surge"])


async def test_missing_tenants_are_added_and_present_ones_keep_their_quotas(
    nats_server: EmbeddedNats,
) -> None:
    nc = await open_nats(nats_server.url, name="test")
    js = nc.jetstream()
    try:
        settings = WorkerSettings()
        await add_tenant(js, "acme", TenantQuota(max_pending=5), settings)
        assert await add_missing_tenants(js, ["acme", "globex"], settings) == ["globex"]
        assert await list_tenants(js) == {
            "acme": TenantQuota(max_pending=5),
            "globex": TenantQuota(),
        }
    finally:
        await nc.close()


def test_a_tenants_user_may_not_manage_tenants(tmp_path: Path) -> None:
    port = free_port()
    stack = secure_stack(tmp_path / "secrets", f"nats://127.0.0.1:{port}", ["acme"])
    with EmbeddedNats(port=port, store_dir=tmp_path / "nats", extra_config=stack.server_config):
        refused = runner.invoke(full_app(), ["tenants", "list"], env=stack.tenants["acme"])
    assert refused.exit_code == 1
    assert "may this NATS user manage streams" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
