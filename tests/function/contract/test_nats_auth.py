"""NATS credential settings: one kind at a time, files that exist, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from function.contract.nats_auth import NatsAuth, NatsAuthError, redact_url


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    monkeypatch.setenv("SURGE_NATS_USER", "alice")
    monkeypatch.setenv("SURGE_NATS_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("SURGE_NATS_URL", "nats://127.0.0.1:4222")  # the worker's, ignored here
    auth = NatsAuth()
    assert auth.problems() == []
    assert auth.password_value() == "hunter2"  # stripped of the file's newline
    assert auth.kinds() == ["user"]


def test_no_secret_in_repr_describe_or_problems(tmp_path: Path) -> None:
    auth = NatsAuth(user="alice", password="hunter2", tls_ca=tmp_path / "missing.pem")
    shown = " ".join([repr(auth), str(auth), auth.describe(), *auth.problems()])
    assert "hunter2" not in shown
    assert "alice" in auth.describe() and "TLS" in auth.describe()
    token = NatsAuth(token="t0ps3cret")
    assert "t0ps3cret" not in repr(token) + token.describe()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"user": "a", "password": "b", "token": "c"}, "one kind of NATS credential"),
        ({"password": "b"}, "needs SURGE_NATS_USER"),
        ({"user": "a"}, "needs SURGE_NATS_PASSWORD_FILE"),
        ({"tls_cert": "c.pem"}, "both SURGE_NATS_TLS_CERT and SURGE_NATS_TLS_KEY"),
        ({"creds": "nowhere.creds"}, "SURGE_NATS_CREDS 'nowhere.creds' is not a readable file"),
    ],
)
def test_unusable_settings_are_named(fields: dict[str, str], problem: str) -> None:
    auth = NatsAuth(**fields)  # type: ignore[arg-type]
    assert any(problem in found for found in auth.problems()), auth.problems()
    with pytest.raises(NatsAuthError, match=problem.split("'")[0]):
        auth.check()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://alice:hunter2@nats:4222", "nats://alice:***@nats:4222"),
        ("tls://s3cr3tt0ken@nats:4222", "tls://***@nats:4222"),
        ("nats://a:b@n1:4222, nats://n2:4222", "nats://a:***@n1:4222,nats://n2:4222"),
    ],
)
def test_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("alice:s3cret@nats:4222", "alice:***@nats:4222"),  # nats-py takes it without a scheme
        ("nats://alice:pa#ss@word@nats:4222", "nats://alice:***@nats:4222"),
    ],
)
def test_odd_urls_are_redacted_too(url: str, shown: str) -> None:
    assert redact_url(url) == shown
