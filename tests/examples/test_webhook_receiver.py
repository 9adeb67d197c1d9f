"""examples/webhook_receiver.py, served for real on a loopback port: a genuine delivery is
taken (200, once), a forged, changed, stale or unsigned one is refused (401)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from function.contract.webhooks import sign, tenant_secret

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
SECRET = tenant_secret(b"master secret", "acme")
BODY = json.dumps({"job_id": "j-1", "status": "ok", "outputs": {}}).encode()


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    taken: list[dict[str, object]] = []
    server: ThreadingHTTPServer = _load().make_server("127.0.0.1", 0, SECRET, taken.append)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", taken
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _post(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Surge-Signature"] = signature
    return httpx.post(url, content=body, headers=headers)


def test_a_genuine_delivery_is_taken_once(
    receiver: tuple[str, list[dict[str, object]]],
) -> None:
    url, taken = receiver
    first = _post(url, BODY, sign(SECRET, int(time.time()), BODY))
    again = _post(url, BODY, sign(SECRET, int(time.time()), BODY))  # a retry
    assert (first.status_code, first.text) == (200, "ok\n")
    assert (again.status_code, again.text) == (200, "ok (already handled)\n")
    assert taken == [json.loads(BODY)]


GLOBEX = tenant_secret(b"master secret", "globex")
# what is sent: (body, its signature at `now`), and why it is refused
BAD: dict[str, tuple[Callable[[int], tuple[bytes, str | None]], str]] = {
    "forged": (lambda now: (BODY, sign(b"not the secret", now, BODY)), "mismatch"),
    "other-tenants": (lambda now: (BODY, sign(GLOBEX, now, BODY)), "mismatch"),
    "changed-body": (lambda now: (BODY.replace(b"ok", b"no"), sign(SECRET, now, BODY)), "mismatch"),
    "stale": (lambda now: (BODY, sign(SECRET, now - 600, BODY)), "stale"),
    "unsigned": (lambda now: (BODY, None), "no signature"),
    "garbage": (lambda now: (BODY, "t=oops,v1=zz"), "malformed"),
}


@pytest.mark.parametrize(("sent", "reason"), BAD.values(), ids=BAD)
def test_a_bad_delivery_is_refused(
    receiver: tuple[str, list[dict[str, object]]],
    sent: Callable[[int], tuple[bytes, str | None]],
    reason: str,
) -> None:
    url, taken = receiver
    response = _post(url, *sent(int(time.time())))
    assert response.status_code == 401
    assert response.text.startswith("refused: ") and reason in response.text
    assert taken == []


def test_the_receiver_needs_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        _load().main(["--port", "0", "--secret", ""])
    assert stopped.value.code == 2
    assert "--secret is needed" in capsys.readouterr().err
