"""The scaler's gRPC over TLS and mutual TLS, called as KEDA calls it, on 127.0.0.1 only.

Certificates are made in the test (a CA, a server certificate for 127.0.0.1, a client
certificate, and a second CA that trusts none of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from typer.testing import CliRunner

from function.cli import full_app
from function.contract.settings import WorkerSettings
from function.local.nats_server import EmbeddedNats, free_port
from function.local.throwaway_pki import Pki, make_pki
from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ScalerSettings, ScalerTlsError, ServerTls, load_server_tls
from scaler.hub import ScalerHub
from scaler.server import run_scaler, start_grpc
from tests.scaler.conftest import FAST, eventually, ref

if TYPE_CHECKING:  # only in the stubs' .pyi
    from scaler._proto.externalscaler_pb2_grpc import ExternalScalerAsyncStub as Stub

pytestmark = pytest.mark.timeout(60)

CALL_S = 5.0  # every RPC has a deadline: a refused handshake must not hang a test


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def stranger(tmp_path: Path) -> Pki:
    """Another PKI: its client certificate is signed by a CA the scaler does not trust."""
    return make_pki(tmp_path / "stranger")


def server_tls(pki: Pki, *, mutual: bool) -> ServerTls:
    tls = load_server_tls(pki.server_cert, pki.server_key, pki.ca if mutual else None)
    assert tls is not None
    return tls


def credentials(ca: Path, client: tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    """What KEDA builds from `caCert`, `tlsClientCert` and `tlsClientKey`."""
    cert, key = client if client is not None else (None, None)
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


@contextlib.asynccontextmanager
async def serving(hub: ScalerHub, tls: ServerTls | None) -> AsyncIterator[int]:
    server, port = await start_grpc(hub, "127.0.0.1", 0, tls)
    try:
        yield port
    finally:
        await server.stop(0.5)


@contextlib.asynccontextmanager
async def keda(port: int, creds: grpc.ChannelCredentials | None) -> AsyncIterator[Stub]:
    """A client on 127.0.0.1:port, over TLS when `creds` is given."""
    target = f"127.0.0.1:{port}"
    if creds is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, creds)
    async with channel:
        yield pb_grpc.ExternalScalerStub(channel)


async def served(stub: Stub) -> None:
    """The three calls KEDA makes all go through."""
    assert (await stub.IsActive(ref(), timeout=CALL_S)).result is False
    (spec,) = (await stub.GetMetricSpec(ref(), timeout=CALL_S)).metricSpecs
    assert spec.targetSize == 1
    stream = stub.StreamIsActive(ref(), timeout=CALL_S)
    first = await stream.read()
    assert isinstance(first, pb.IsActiveResponse) and first.result is False
    stream.cancel()


async def refused(stub: Stub) -> None:
    """The handshake fails: UNAVAILABLE at once, not a deadline run out."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IsActive(ref(), timeout=CALL_S)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value


@pytest.fixture
def mode_log() -> Iterator[list[str]]:
    """The scaler server's log messages (its own handler: the `surge` logger may not propagate)."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("surge.scaler.server")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


# --- TLS -----------------------------------------------------------------------------


async def test_tls_serves_a_client_that_trusts_the_ca(hub, pki, mode_log) -> None:
    tls = server_tls(pki, mutual=False)
    async with serving(hub, tls) as port, keda(port, credentials(pki.ca)) as stub:
        await served(stub)
    (line,) = [m for m in mode_log if "listening" in m]
    assert f"TLS (certificate {pki.server_cert})" in line
    assert "mutual" not in line and "BEGIN" not in line


async def test_tls_refuses_a_client_that_trusts_another_ca(hub, pki) -> None:
    async with serving(hub, server_tls(pki, mutual=False)) as port:
        async with keda(port, credentials(pki.other_ca)) as stub:
            await refused(stub)
        async with keda(port, credentials(pki.ca)) as stub:
            await served(stub)  # the same server, a client that trusts its CA


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
async def test_tls_refuses_a_plaintext_client(hub, pki, mutual) -> None:
    client = (pki.client_cert, pki.client_key) if mutual else None
    async with serving(hub, server_tls(pki, mutual=mutual)) as port:
        async with keda(port, None) as stub:
            await refused(stub)
        async with keda(port, credentials(pki.ca, client)) as stub:
            await served(stub)


async def test_plaintext_stays_the_default(hub, mode_log, monkeypatch) -> None:
    for name in ("CERT", "KEY", "CLIENT_CA"):
        monkeypatch.delenv(f"SURGE_SCALER_TLS_{name}", raising=False)
    assert ScalerSettings().server_tls() is None
    async with serving(hub, None) as port, keda(port, None) as stub:
        await served(stub)
    assert [m for m in mode_log if "listening" in m and m.endswith(", plaintext")]


def test_empty_variables_mean_plaintext(monkeypatch) -> None:
    """An env var set to "" (as a template may leave it) is unset, not the current folder."""
    for name in ("CERT", "KEY", "CLIENT_CA"):
        monkeypatch.setenv(f"SURGE_SCALER_TLS_{name}", "")
    assert ScalerSettings().server_tls() is None


def test_tls_material_never_shows_the_key(pki) -> None:
    tls = server_tls(pki, mutual=True)
    assert "PRIVATE" not in repr(tls) and "BEGIN" not in tls.describe()


# --- mutual TLS ----------------------------------------------------------------------


async def test_mutual_tls_wants_a_client_certificate_from_the_ca(
    hub, pki, stranger, mode_log
) -> None:
    async with serving(hub, server_tls(pki, mutual=True)) as port:
        async with keda(port, credentials(pki.ca)) as stub:
            await refused(stub)  # no client certificate
        strange = (stranger.client_cert, stranger.client_key)
        async with keda(port, credentials(pki.ca, strange)) as stub:
            await refused(stub)  # a certificate from a CA the scaler does not trust
        async with keda(port, credentials(pki.ca, (pki.client_cert, pki.client_key))) as stub:
            await served(stub)
    (line,) = [m for m in mode_log if "listening" in m]
    assert f"mutual TLS (certificate {pki.server_cert}, client CA {pki.ca})" in line


async def test_run_scaler_serves_mutual_tls_from_settings(nats_server: EmbeddedNats, pki) -> None:
    """The whole start path: settings -> checked files -> gRPC over mutual TLS."""
    port = free_port()
    settings = FAST.model_copy(
        update={
            "grpc_host": "127.0.0.1",
            "grpc_port": port,
            "tls_cert": pki.server_cert,
            "tls_key": pki.server_key,
            "tls_client_ca": pki.ca,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_scaler(settings, WorkerSettings(nats_url=nats_server.url), stop))
    try:
        creds = credentials(pki.ca, (pki.client_cert, pki.client_key))
        async with keda(port, creds) as stub:

            async def answers() -> bool:
                try:
                    return not (await stub.IsActive(ref(), timeout=CALL_S)).result
                except grpc.aio.AioRpcError:
                    return False

            await eventually(answers, timeout=20, interval=0.2)
        async with keda(port, credentials(pki.ca)) as stub:
            await refused(stub)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


# --- bad settings --------------------------------------------------------------------


Bad = Callable[[Pki, Pki, Path], tuple[dict[str, Path], str]]

# Settings that cannot work (from the PKI, a stranger's PKI and a folder) and a part of
# the error each must give.
BAD: dict[str, Bad] = {
    "cert-without-key": lambda p, _, __: (
        {"tls_cert": p.server_cert},
        "both a certificate and its key",
    ),
    "key-without-cert": lambda p, _, __: (
        {"tls_key": p.server_key},
        "both a certificate and its key",
    ),
    "client-ca-alone": lambda p, _, __: ({"tls_client_ca": p.ca}, "needs a certificate and key"),
    "missing-cert": lambda p, _, tmp: (
        {"tls_cert": tmp / "missing.pem", "tls_key": p.server_key},
        f"certificate file '{tmp / 'missing.pem'}': No such file or directory",
    ),
    "missing-client-ca": lambda p, _, tmp: (
        {"tls_cert": p.server_cert, "tls_key": p.server_key, "tls_client_ca": tmp / "no.pem"},
        f"client CA file '{tmp / 'no.pem'}': No such file or directory",
    ),
    "directory": lambda p, _, tmp: (
        {"tls_cert": tmp, "tls_key": p.server_key},
        "Is a directory",
    ),
    "swapped": lambda p, _, __: (
        {"tls_cert": p.server_key, "tls_key": p.server_cert},
        "holds no PEM certificate",
    ),
    "key-of-another-certificate": lambda p, other, __: (
        {"tls_cert": p.server_cert, "tls_key": other.server_key},
        "the key does not match the certificate",
    ),
    "client-ca-is-a-key": lambda p, _, __: (
        {"tls_cert": p.server_cert, "tls_key": p.server_key, "tls_client_ca": p.client_key},
        "client CA file",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_settings_are_one_clear_error(pki, stranger, tmp_path, case) -> None:
    fields, expected = BAD[case](pki, stranger, tmp_path)
    with pytest.raises(ScalerTlsError) as caught:
        ScalerSettings.model_validate(fields).server_tls()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message and "BEGIN" not in message


def test_serve_rejects_bad_tls_flags_in_one_line(pki) -> None:
    runner = CliRunner()
    result = runner.invoke(full_app(), ["scaler", "serve", "--grpc-tls-cert", str(pki.server_cert)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "surge scaler serve: TLS needs both a certificate and its key"
        " (SURGE_SCALER_TLS_CERT and _KEY), not one"
    ]


def test_serve_exits_at_once_on_a_missing_file(pki, tmp_path) -> None:
    """As a user runs it: non-zero, one line, no traceback, no wait for NATS."""
    env = {
        "SURGE_NATS_URL": "nats://127.0.0.1:1",  # nothing there: it must not be waited for
        "SURGE_SCALER_TLS_CERT": str(tmp_path / "gone.pem"),
        "SURGE_SCALER_TLS_KEY": str(pki.server_key),
        "SURGE_SCALER_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "function", "scaler", "serve"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"surge scaler serve: TLS certificate file '{tmp_path / 'gone.pem'}': "
        "No such file or directory"
    ]
