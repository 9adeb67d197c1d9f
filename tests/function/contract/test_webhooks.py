"""Signed webhooks, pure parts: signatures, per-tenant secrets, allowed URLs, record keys,
and the `Surge-Webhook` header of a job."""

from __future__ import annotations

import hashlib
import hmac
import random
import string

import pytest

from function.contract.errors import BadInput, ErrorCode
from function.contract.parse import job_headers, parse_job
from function.contract.settings import Header, WorkerSettings
from function.contract.webhooks import (
    MAX_WEBHOOK_URL_CHARS,
    BadSignature,
    sign,
    tenant_secret,
    verify,
    webhook_key,
    webhook_url_problem,
)

SECRET = b"0123456789abcdef" * 4
BODY = b'{"job_id":"j-1","status":"ok"}'
NOW = 1_700_000_000


def test_a_signature_is_the_hmac_of_the_timestamp_and_the_body() -> None:
    header = sign(SECRET, NOW, BODY)
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    verify(SECRET, header, BODY, now=NOW)
    verify(SECRET, header, BODY, now=NOW + 300)  # at the edge of the tolerance
    verify(SECRET, header, BODY, now=NOW - 300)


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (sign(SECRET, NOW, BODY), BODY + b" ", NOW, "mismatch"),
        (sign(b"another secret", NOW, BODY), BODY, NOW, "mismatch"),
        (sign(SECRET, NOW, BODY), BODY, NOW + 301, "stale"),
        (sign(SECRET, NOW, BODY), BODY, NOW - 301, "future"),
        (None, BODY, NOW, "no signature"),
        ("", BODY, NOW, "no signature"),
        (f"t={NOW}", BODY, NOW, "v1="),
        ("v1=" + "0" * 64, BODY, NOW, "t="),
        (f"t={NOW},t={NOW},v1=" + "0" * 64, BODY, NOW, "t="),
        (f"t=-5,v1={'0' * 64}", BODY, NOW, "t="),
        (f"t={NOW},v1=XYZ", BODY, NOW, "v1="),
        (f"t={NOW},v1", BODY, NOW, "key=value"),
        ("t=1," + "x" * 2000, BODY, NOW, "malformed"),
        (f"t={NOW},v1=\u00e9", BODY, NOW, "malformed"),
    ],
)
def test_a_bad_signature_is_refused_with_its_reason(
    header: str | None, body: bytes, now: int, reason: str
) -> None:
    with pytest.raises(BadSignature) as refused:
        verify(SECRET, header, body, now=now)
    assert reason in refused.value.reason


def test_one_matching_signature_of_several_is_enough() -> None:
    """Room for a secret rotation: the sender may sign with the old and the new."""
    good = sign(SECRET, NOW, BODY).split(",")[1]
    verify(SECRET, f"t={NOW},v1={'0' * 64},{good},extra=ignored", BODY, now=NOW)


def test_garbage_headers_only_ever_raise_bad_signature() -> None:
    """A bounded, seeded fuzz: whatever a header holds, `verify` answers BadSignature."""
    rng = random.Random(14)
    alphabet = string.printable + "=,\u00e9\u2028\x00"
    pieces = ["t=", "v1=", ",", "=", str(NOW), "0" * 64, "f" * 64, " ", "-", "t=1e3"]
    for _ in range(3000):
        if rng.random() < 0.5:
            header = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        else:
            header = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        with pytest.raises(BadSignature):
            verify(SECRET, header, BODY, now=NOW)


def test_each_tenant_has_its_own_secret() -> None:
    master = b"master"
    secrets = {tenant_secret(master, t) for t in (None, "acme", "globex")}
    assert len(secrets) == 3
    assert tenant_secret(master, "acme") == tenant_secret(master, "acme")
    assert tenant_secret(b"other master", "acme") != tenant_secret(master, "acme")
    assert len(tenant_secret(master, "acme")) == 64  # hex digits, as printed
    body_for_acme = sign(tenant_secret(master, "acme"), NOW, BODY)
    with pytest.raises(BadSignature):
        verify(tenant_secret(master, "globex"), body_for_acme, BODY, now=NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://example.com:8080/a/b?c=d",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
    ],
)
def test_public_urls_may_receive_webhooks(url: str) -> None:
    assert webhook_url_problem(url, []) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https:///hook", "no host"),
        ("https://user:pw@example.com/", "user name"),
        ("https://user@example.com/", "user name"),
        ("https://example.com:99999/", "does not parse"),
        ("https://[::1/", "does not parse"),
        ("https://example.com/a b", "control characters"),
        ("https://example.com/\r\nX: y", "control characters"),
        ("https://ex\u00e4mple.com/", "ASCII"),
        ("https://example.com/" + "a" * MAX_WEBHOOK_URL_CHARS, "at most 2048"),
        ("http://127.0.0.1:9000/", "internal"),
        ("http://127.1/", "internal"),
        ("http://2130706433/", "internal"),
        ("http://0x7f.0.0.1/", "internal"),
        ("http://localhost/", "internal"),
        ("http://LOCALHOST./", "internal"),
        ("http://api.localhost/", "internal"),
        ("http://10.0.0.8/", "internal"),
        ("http://192.168.1.1/", "internal"),
        ("http://169.254.169.254/latest/meta-data", "internal"),
        ("http://0.0.0.0/", "internal"),
        ("http://[::1]/", "internal"),
        ("http://[::ffff:127.0.0.1]/", "internal"),
        ("http://[fe80::1]/", "internal"),
    ],
)
def test_other_urls_are_refused_with_a_reason(url: str, problem: str) -> None:
    found = webhook_url_problem(url, [])
    assert found is not None and problem in found
    assert url not in found  # never echoed


def test_an_allow_list_names_the_only_hosts() -> None:
    allow = ["127.0.0.1", "Hooks.Example.com."]
    assert webhook_url_problem("http://127.0.0.1:9000/hook", allow) is None
    assert webhook_url_problem("https://hooks.example.com/x", allow) is None
    refused = webhook_url_problem("https://example.com/x", allow)
    assert refused is not None and "SURGE_WEBHOOK_ALLOW_HOSTS" in refused
    assert webhook_url_problem("https://user@127.0.0.1/", allow) is not None


def test_the_allow_list_setting_takes_a_comma_list() -> None:
    env = {"SURGE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1, hooks.example.com"}
    settings = WorkerSettings.from_mapping({**env, "SURGE_WEBHOOK_SECRET": "s3cret"})
    assert settings.webhook_allow_hosts == ["127.0.0.1", "hooks.example.com"]
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_record_keys_are_valid_kv_keys_and_distinct() -> None:
    ids = ["abc", "a:b", "a/b", "=abc", "a!b", "YWJj", "=YWJj", "x" * 256]
    keys = {webhook_key(job_id, tenant) for job_id in ids for tenant in (None, "acme")}
    assert len(keys) == 2 * len(ids)
    assert webhook_key("abc", None) == "_open.abc"
    assert webhook_key("abc", "acme") == "acme.abc"
    allowed = set(string.ascii_letters + string.digits + "-/_=.")
    assert all(set(key) <= allowed for key in keys)


def test_a_job_carries_its_webhook() -> None:
    url = "https://hooks.example.com/done"
    headers = job_headers("j-1", content_type="image/png", webhook=url)
    assert headers[Header.WEBHOOK] == url
    job = parse_job("surge.jobs.high.tiny", headers, b"\x89PNG\r\n\x1a\nrest")
    assert job.webhook == url
    assert parse_job("surge.jobs.high.tiny", {}, b"\x89PNG\r\n\x1a\nrest").webhook is None


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("http://10.0.0.1/x", ()),
        ("ftp://example.com/", ()),
        ("https://example.com/", ("127.0.0.1",)),
    ],
)
def test_a_job_with_a_bad_webhook_is_bad_input(url: str, hosts: tuple[str, ...]) -> None:
    headers = job_headers("j-1", content_type="image/png", webhook=url)
    with pytest.raises(BadInput) as refused:
        parse_job("surge.jobs.high.tiny", headers, b"\x89PNG\r\n\x1a\nrest", webhook_hosts=hosts)
    assert refused.value.code is ErrorCode.BAD_ENVELOPE
    assert refused.value.message.startswith(f"{Header.WEBHOOK}: ")
