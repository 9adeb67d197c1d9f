"""`surge tenants add|list|remove` and a tenant's `surge submit` past its quota, against a
real nats-server (open: any client may name a tenant, which is enough for the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from function.cli import full_app
from function.local.nats_server import EmbeddedNats
from tests.helpers import png_bytes

pytestmark = pytest.mark.nats

app = full_app()
runner = CliRunner()


def _surge(*args: str, tenant: str | None = None) -> Result:
    """`surge [--tenant T] ARGS`; SURGE_TENANT, which `--tenant` sets, is put back after."""
    prefix = ["--tenant", tenant] if tenant else []
    return runner.invoke(app, [*prefix, *args], env={"SURGE_TENANT": None, "COLUMNS": "200"})


def _tenants(server: EmbeddedNats) -> dict[str, dict[str, object]]:
    listed = _surge("tenants", "list", "--json", "--nats-url", server.url)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    return {str(row["tenant"]): row for row in rows}


def _images(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        path.write_bytes(png_bytes(color=(index, 60, 90)))
        paths.append(str(path))
    return paths


def test_add_update_list_and_remove_a_tenant(nats_server: EmbeddedNats) -> None:
    url = ["--nats-url", nats_server.url]
    empty = _surge("tenants", "list", *url)
    assert empty.exit_code == 0 and "no tenants" in empty.stdout

    added = _surge("tenants", "add", "acme", "--max-pending", "100", *url)
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == (
        "tenant acme added: max_pending=100 max_payload=unlimited max_rate=unlimited"
    )
    # An update changes what it names and keeps the rest; 0 means unlimited.
    updated = _surge("tenants", "add", "acme", "--max-rate", "2.5", "--max-payload", "4096", *url)
    assert updated.exit_code == 0, updated.output
    assert updated.stdout.strip() == (
        "tenant acme updated: max_pending=100 max_payload=4096 max_rate=2.5"
    )
    assert _surge("tenants", "add", "globex", *url).exit_code == 0
    assert _surge("tenants", "add", "acme", "--max-pending", "0", *url).exit_code == 0

    rows = _tenants(nats_server)
    assert rows["acme"] == {
        "tenant": "acme",
        "max_pending": None,
        "max_payload": 4096,
        "max_rate": 2.5,
        "queued": 0,
        "queued_bytes": 0,
    }
    assert rows["globex"]["max_pending"] is None
    table = _surge("tenants", "list", *url)
    assert table.exit_code == 0
    acme = next(line for line in table.stdout.splitlines() if " acme " in line)
    assert "4096 B" in acme and "2.5/s" in acme and "unlimited" in acme

    removed = _surge("tenants", "remove", "globex", *url)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.strip() == "tenant globex removed (0 queued jobs dropped)"
    assert set(_tenants(nats_server)) == {"acme"}


def test_bad_ids_and_absent_tenants_are_one_line(nats_server: EmbeddedNats) -> None:
    url = ["--nats-url", nats_server.url]
    for bad in ("Acme", "a.b", "a" * 64):
        refused = _surge("tenants", "add", bad, *url)
        assert refused.exit_code == 2, refused.output
        assert "is not a tenant id" in refused.output
    absent = _surge("tenants", "remove", "nobody", *url)
    assert absent.exit_code == 1
    assert absent.stderr.strip() == "surge tenants: no tenant nobody on this server"
    negative = _surge("tenants", "add", "acme", "--max-pending", "-1", *url)
    assert negative.exit_code == 2


def test_a_submit_past_max_pending_is_one_line_and_a_queued_tenant_is_kept(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    url = ["--nats-url", nats_server.url]
    images = _images(tmp_path, 3)
    unknown = _surge("submit", images[0], *url, tenant="acme")
    assert unknown.exit_code == 1
    assert "surge tenants add acme" in unknown.stderr and "Traceback" not in unknown.output

    assert _surge("tenants", "add", "acme", "--max-pending", "2", *url).exit_code == 0
    # No worker: the first two wait on the stream, the third is refused by the server.
    submitted = _surge("submit", *images, *url, tenant="acme")
    assert submitted.exit_code == 1, submitted.output
    assert [line.split("\t")[1] for line in submitted.stdout.splitlines()] == images[:2]
    refusal = [line for line in submitted.stderr.splitlines() if line.startswith("surge: ")]
    assert len(refusal) == 1
    assert refusal[0].startswith("surge: quota_exceeded: tenant 'acme' max_pending")
    assert "Traceback" not in submitted.output
    assert _tenants(nats_server)["acme"]["queued"] == 2

    kept = _surge("tenants", "remove", "acme", *url)
    assert kept.exit_code == 1
    assert kept.stderr.strip() == (
        "surge tenants: tenant acme has 2 queued jobs (use --force to drop them)"
    )
    assert "acme" in _tenants(nats_server)
    dropped = _surge("tenants", "remove", "acme", "--force", *url)
    assert dropped.exit_code == 0, dropped.output
    assert dropped.stdout.strip() == "tenant acme removed (2 queued jobs dropped)"
    assert _tenants(nats_server) == {}


def test_a_larger_max_payload_than_the_server_takes_is_noted(nats_server: EmbeddedNats) -> None:
    added = _surge(
        "tenants", "add", "acme", "--max-payload", str(64 * 1024 * 1024), "--nats-url",
        nats_server.url,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "note: this server takes no message over 1048576 bytes" in added.stderr
