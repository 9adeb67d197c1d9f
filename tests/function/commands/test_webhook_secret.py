"""`surge tenants webhook-secret [NAME]`: a tenant's webhook secret, derived from the
workers' `SURGE_WEBHOOK_SECRET` (no NATS needed)."""

from __future__ import annotations

from click.testing import Result
from typer.testing import CliRunner

from function.cli import full_app
from function.contract.webhooks import sign, tenant_secret, verify

app = full_app()
runner = CliRunner()


def _secret(*args: str, master: str | None = "the master") -> Result:
    env = {"SURGE_WEBHOOK_SECRET": master, "COLUMNS": "200"}
    return runner.invoke(app, ["tenants", "webhook-secret", *args], env=env)


def test_it_prints_the_secret_the_tenants_webhooks_are_signed_with() -> None:
    printed = _secret("acme")
    assert printed.exit_code == 0, printed.output
    secret = printed.stdout.strip().encode()
    assert secret == tenant_secret(b"the master", "acme")
    verify(secret, sign(tenant_secret(b"the master", "acme"), 100, b"{}"), b"{}", now=100)
    open_jobs = _secret()
    assert open_jobs.stdout.strip().encode() == tenant_secret(b"the master", None)
    assert open_jobs.stdout != printed.stdout


def test_without_the_master_secret_or_with_a_bad_name_it_says_so() -> None:
    unset = _secret("acme", master=None)
    assert unset.exit_code == 1
    assert "SURGE_WEBHOOK_SECRET is not set" in unset.stderr
    bad = _secret("Not.A.Tenant")
    assert bad.exit_code == 2 and "is not a tenant id" in bad.output
