"""HTTP auth against the real app: API keys from a tenants file, JWTs from PEM and JWKS files.

Keys and tokens are made here. Refusals come before readiness, so most cases run on an
app whose worker is not started (a valid credential then meets 503 `not_ready`); the
200s run on a real `tiny` worker over a real nats-server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client.parser import text_string_to_metric_families

from function.client import SurgeClient
from function.contract.errors import ErrorCode
from function.contract.http_auth import HttpAuthError
from function.contract.quota import TenantQuota
from function.contract.settings import WorkerSettings, tenant_blob_bucket
from function.contract.wire import JobStatus, Result, ScoresOutput
from function.http.app import create_app
from function.http.func import Function
from function.local.nats_server import EmbeddedNats
from function.telemetry import JsonFormatter
from function.transport.tenants import add_tenant
from function.transport.topology import ensure_blob_store
from tests.helpers import asgi_client, png_bytes, until_ready

ISSUER = "https://issuer.test"
AUDIENCE = "surge"
ACME_KEY = "acme-key-0123456789abcdef0123456789"
GLOBEX_KEY = "globex-key-0123456789abcdef012345678"
CE_HEADERS = {
    "ce-specversion": "1.0",
    "ce-id": "ce-1",
    "ce-source": "t",
    "ce-type": "x",
    "content-type": "image/png",
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Keys:
    rsa_key: rsa.RSAPrivateKey  # its public key is in the PEM file
    ec_key: ec.EllipticCurvePrivateKey  # its public key is in the JWKS file, kid "ec-1"
    stranger: rsa.RSAPrivateKey  # configured nowhere


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        stranger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def _token(key: Any, alg: str = "RS256", kid: str | None = None, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-7",
        "tenant": "acme",
        "iat": now,
        "exp": now + 300,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.fixture
def auth_env(keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tenants file, PEM and JWKS on disk, and the `SURGE_HTTP_AUTH_*` variables naming them."""
    tenants = {
        "tenants": {
            "acme": {"functions": ["tiny"], "api_keys_sha256": [_sha256(ACME_KEY)]},
            "globex": {"functions": ["remove-bg"], "api_keys_sha256": [_sha256(GLOBEX_KEY)]},
        }
    }
    (tmp_path / "tenants.json").write_text(json.dumps(tenants))
    (tmp_path / "jwt.pem").write_bytes(_pem(keys.rsa_key))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.ec_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1"}]}))
    for name, value in {
        "KEYS_FILE": str(tmp_path / "tenants.json"),
        "JWT_PUBLIC_KEY": str(tmp_path / "jwt.pem"),
        "JWKS_FILE": str(tmp_path / "jwks.json"),
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }.items():
        monkeypatch.setenv(f"SURGE_HTTP_AUTH_{name}", value)
    return tmp_path


def _function(tmp_path: Path, nats_url: str = "nats://127.0.0.1:1") -> Function:
    return Function(
        WorkerSettings(nats_url=nats_url, function="tiny", model_dir=tmp_path / "models")
    )


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _auth_counts(metrics: str) -> dict[tuple[str, str], float]:
    """`surge_http_auth_total` of the tiny function by (tenant, result)."""
    return {
        (sample.labels["tenant"], sample.labels["result"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "surge_http_auth_total" and sample.labels["function"] == "tiny"
    }


async def _counted(http: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    response = await http.get("/metrics")  # no token: /metrics stays open
    assert response.status_code == 200
    return _auth_counts(response.text)


def _delta(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """Every `surge` log record, to caplog and as JSON lines (the logger does not propagate)."""
    stream = io.StringIO()
    json_handler = logging.StreamHandler(stream)
    json_handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("surge")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(caplog.handler)
    logger.addHandler(json_handler)
    try:
        yield stream
    finally:
        logger.removeHandler(json_handler)
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


def _refusals(keys: Keys) -> dict[str, tuple[dict[str, str], int, str]]:
    """Case name -> (request headers, status, words the reason must hold)."""
    past = int(time.time()) - 3600
    return {
        "no-header": ({}, 401, "missing bearer token"),
        "basic-scheme": ({"authorization": "Basic dXNlcjpwYXNz"}, 401, "scheme must be Bearer"),
        "empty-bearer": ({"authorization": "Bearer "}, 401, "malformed bearer token"),
        "wrong-key": (_bearer("not-a-key-of-anyone"), 401, "unknown API key"),
        "other-function": (_bearer(GLOBEX_KEY), 403, "tenant 'globex' may not call 'tiny'"),
        "expired": (_bearer(_token(keys.rsa_key, exp=past, iat=past - 60)), 401, "expired"),
        "wrong-audience": (_bearer(_token(keys.rsa_key, aud="elsewhere")), 401, "audience"),
        "wrong-issuer": (_bearer(_token(keys.rsa_key, iss="https://evil.test")), 401, "issuer"),
        "no-exp": (_bearer(_token(keys.rsa_key, exp=None)), 401, "no 'exp' claim"),
        "other-signer": (_bearer(_token(keys.stranger)), 401, "bad signature"),
        "other-signer-kid": (
            _bearer(_token(keys.stranger, kid="ec-1")),
            401,
            "bad signature",
        ),
        "alg-none": (_bearer(_token(None, alg="none")), 401, "algorithm is not allowed"),
        "hs256-with-public-key": (
            _bearer(_hs256(_pem(keys.rsa_key))),
            401,
            "algorithm is not allowed",
        ),
        "jwt-tenant-without-function": (
            _bearer(_token(keys.rsa_key, tenant="initech")),
            403,
            "tenant 'initech' may not call 'tiny'",
        ),
        "jwt-claim-other-function": (
            _bearer(_token(keys.rsa_key, surge_functions=["nsfw"])),
            403,
            "may not call 'tiny'",
        ),
    }


def _hs256(secret: bytes) -> str:
    """A token HMAC-signed with the public key's PEM (the algorithm-confusion attack)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    claims = {"iss": ISSUER, "aud": AUDIENCE, "tenant": "acme", "exp": int(time.time()) + 60}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = hmac.new(secret, header + b"." + body, hashlib.sha256).digest()
    return b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()


async def test_refusals_name_the_check_and_never_the_token(
    keys: Keys, auth_env: Path, logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    function = _function(auth_env)
    cases = _refusals(keys)
    async with asgi_client(function) as http:
        before = await _counted(http)
        for name, (headers, status, words) in cases.items():
            for path, extra in (("/v1/infer/tiny", {}), ("/", CE_HEADERS)):
                response = await http.post(path, content=png_bytes(), headers={**headers, **extra})
                assert response.status_code == status, (name, path, response.text)
                result = Result.model_validate(response.json())
                assert result.status is JobStatus.ERROR and result.function == "tiny"
                assert result.error is not None
                assert result.error.code.value == ("unauthorized" if status == 401 else "forbidden")
                assert words in result.error.message, (name, result.error.message)
                if status == 401:
                    assert response.headers["www-authenticate"].startswith('Bearer realm="surge"')
                token = headers.get("authorization", "").partition(" ")[2]
                if token:
                    assert token not in response.text
                    assert all(token not in value for value in response.headers.values())
        counted = _delta(before, await _counted(http))
    assert counted == {
        ("none", "unauthorized"): 2 * 12,
        ("globex", "forbidden"): 2,
        ("acme", "forbidden"): 2,
        ("other", "forbidden"): 2,  # initech: not in the tenants file
    }
    written = caplog.text + logs.getvalue()
    assert "refused (403): tenant 'globex' may not call 'tiny'" in caplog.text
    for headers, _, _ in cases.values():
        token = headers.get("authorization", "").partition(" ")[2]
        assert not token or token not in written
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert {line["tenant"] for line in lines if "globex" in line["msg"]} == {"globex"}


async def test_valid_credentials_pass_and_probes_stay_open(keys: Keys, auth_env: Path) -> None:
    function = _function(auth_env)
    accepted = {
        "api-key": ACME_KEY,
        "jwt-pem-rs256": _token(keys.rsa_key),
        "jwt-jwks-es256": _token(keys.ec_key, alg="ES256", kid="ec-1"),
        "jwt-sub-fallback": _token(keys.rsa_key, tenant=None, sub="acme"),
        "jwt-functions-claim": _token(keys.rsa_key, tenant="initech", surge_functions=["tiny"]),
        "jwt-leeway": _token(keys.rsa_key, exp=int(time.time()) - 5),
    }
    async with asgi_client(function) as http:
        before = await _counted(http)
        for name, token in accepted.items():
            response = await http.post(
                "/v1/infer/tiny", content=png_bytes(), headers=_bearer(token)
            )
            # past auth, the unstarted worker answers not_ready
            assert response.status_code == 503, (name, response.text)
            assert response.json()["error"]["code"] == "not_ready"
        assert (await http.get("/health/liveness")).status_code == 200
        assert (await http.get("/health/readiness")).status_code == 503  # not started, not 401
        counted = _delta(before, await _counted(http))
    assert counted == {("acme", "ok"): 5, ("other", "ok"): 1}  # initech: not in the file


@pytest.fixture
async def tiny(auth_env: Path, nats_server: EmbeddedNats) -> AsyncIterator[Function]:
    function = _function(auth_env, nats_server.url)
    function.start()
    await until_ready(function)
    yield function
    await function.drain()


async def test_api_key_and_jwt_get_inference_results(
    tiny: Function, keys: Keys, logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_token = _token(keys.ec_key, alg="ES256", kid="ec-1")
    async with asgi_client(tiny) as http:
        before = await _counted(http)
        by_key = await http.post("/v1/infer/tiny", content=png_bytes(), headers=_bearer(ACME_KEY))
        by_jwt = await http.post(
            "/v1/infer/tiny", content=png_bytes(), headers=_bearer(_token(keys.rsa_key))
        )
        by_jwks = await http.post(
            "/", content=png_bytes(), headers={**CE_HEADERS, **_bearer(jwks_token)}
        )
        refused = await http.post("/", content=png_bytes(), headers=CE_HEADERS)
        assert (await http.get("/health/readiness")).status_code == 200
        counted = _delta(before, await _counted(http))
    for response in (by_key, by_jwt, by_jwks):
        assert response.status_code == 200, response.text
        result = Result.model_validate(response.json())
        assert result.status is JobStatus.OK
        scores = result.outputs["scores"]
        assert isinstance(scores, ScoresOutput) and 0 <= scores.scores["mean"] <= 1
    assert by_jwks.headers["ce-type"] == "dev.surge.result"
    assert refused.status_code == 401
    assert counted == {("acme", "ok"): 3, ("none", "unauthorized"): 1}
    written = caplog.text + logs.getvalue()
    assert ACME_KEY not in written and jwks_token not in written
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    authenticated = [line for line in lines if line["msg"].startswith("authenticated by")]
    assert len(authenticated) == 3 and {line["tenant"] for line in authenticated} == {"acme"}


JWT_ENV = {"JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE}
PLAIN_KEY = json.dumps({"tenants": {"acme": {"api_keys_sha256": ["hunter2"]}}})
SYMMETRIC_JWK = json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
PRIVATE_JWK = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "d": "c2VjcmV0"}]})


@pytest.mark.parametrize(
    ("files", "env", "words"),
    [
        pytest.param({"t.json": "{no"}, {"KEYS_FILE": "t.json"}, "not valid JSON", id="json"),
        pytest.param({"t.json": PLAIN_KEY}, {"KEYS_FILE": "t.json"}, "SHA-256 hex", id="plain"),
        pytest.param(
            {"t.json": json.dumps({"tenants": {"acme": {"api_keys": ["hunter2"]}}})},
            {"KEYS_FILE": "t.json"},
            "Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param({"t.yaml": "a: [b\n"}, {"KEYS_FILE": "t.yaml"}, "not valid YAML", id="yaml"),
        pytest.param({}, {"KEYS_FILE": "none.json"}, "is not a readable file", id="missing"),
        pytest.param({"k.pem": "x"}, {"JWT_PUBLIC_KEY": "k.pem", **JWT_ENV}, "no PEM", id="pem"),
        pytest.param({"k.pem": "x"}, {"JWT_PUBLIC_KEY": "k.pem"}, "JWT_ISSUER", id="no-issuer"),
        pytest.param(
            {"jwks.json": SYMMETRIC_JWK},
            {"JWKS_FILE": "jwks.json", **JWT_ENV},
            "symmetric or private key",
            id="symmetric-jwk",
        ),
        pytest.param(
            {"jwks.json": PRIVATE_JWK},
            {"JWKS_FILE": "jwks.json", **JWT_ENV},
            "symmetric or private key",
            id="private-jwk",
        ),
        pytest.param({}, {"KEYS_FILE": "t", "JWT_ALGORITHMS": '["HS256"]'}, "asymmetric", id="hs"),
    ],
)
def test_broken_configuration_fails_at_startup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    env: dict[str, str],
    words: str,
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for name, value in env.items():
        path_like = name.endswith(("_FILE", "_KEY"))
        monkeypatch.setenv(f"SURGE_HTTP_AUTH_{name}", str(tmp_path / value) if path_like else value)
    with pytest.raises(HttpAuthError) as raised:
        _function(tmp_path)
    assert words in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_private_key_in_the_pem_file_is_refused(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = keys.rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "jwt.pem").write_bytes(pem)
    for name, value in {"JWT_PUBLIC_KEY": str(tmp_path / "jwt.pem"), **JWT_ENV}.items():
        monkeypatch.setenv(f"SURGE_HTTP_AUTH_{name}", value)
    with pytest.raises(HttpAuthError, match="holds a private key"):
        _function(tmp_path)


async def test_auth_is_off_by_default(tmp_path: Path) -> None:
    async with asgi_client(_function(tmp_path)) as http:
        response = await http.post("/v1/infer/tiny", content=png_bytes())
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


async def test_an_http_tenant_may_name_only_its_own_blobs(tiny: Function) -> None:
    """Before, HTTP jobs were open jobs: tenant acme could have a worker read anyone's blob."""
    headers = {**_bearer(ACME_KEY), "Content-Type": "application/json"}
    async with asgi_client(tiny) as http:
        for ref in ("tenants/globex/inputs/x", "results/someone/cutout", "inputs/x"):
            body = json.dumps({"image_ref": ref}).encode()
            response = await http.post("/v1/infer/tiny", content=body, headers=headers)
            assert response.status_code == 422, response.text
            error = Result.model_validate(response.json()).error
            assert error is not None and "outside tenant acme" in error.message


async def test_an_http_tenants_upload_is_read_from_its_own_bucket(
    tiny: Function, nats_server: EmbeddedNats
) -> None:
    """Acme's `image_ref` names an object in acme's bucket; the shared bucket's object of
    the same name is never read."""
    ref = "tenants/acme/inputs/photo"
    async with await SurgeClient.connect(nats_server.url) as admin:
        await add_tenant(admin.js, "acme", TenantQuota(), WorkerSettings())
        await (await admin.js.object_store(tenant_blob_bucket("acme"))).put(ref, png_bytes())
        shared = await ensure_blob_store(admin.js, WorkerSettings())
        await shared.put("tenants/acme/inputs/shared-only", png_bytes())
    headers = {**_bearer(ACME_KEY), "Content-Type": "application/json"}
    async with asgi_client(tiny) as http:
        own = await http.post(
            "/v1/infer/tiny", content=json.dumps({"image_ref": ref}).encode(), headers=headers
        )
        shared_ref = json.dumps({"image_ref": "tenants/acme/inputs/shared-only"}).encode()
        other = await http.post("/v1/infer/tiny", content=shared_ref, headers=headers)
    assert own.status_code == 200, own.text
    assert Result.model_validate(own.json()).tenant == "acme"
    error = Result.model_validate(other.json()).error
    assert error is not None and error.code is ErrorCode.INPUT_NOT_FOUND


async def test_an_app_built_without_an_authenticator_reads_the_environment(
    auth_env: Path, tmp_path: Path
) -> None:
    """`create_app(fn)` (embedding, tests) never fails open when auth is configured."""
    app = create_app(_function(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://surge") as http:
        refused = await http.post("/v1/infer/tiny", content=b"x")
    assert refused.status_code == 401


def test_an_app_without_jwt_keys_loads_neither_pyjwt_nor_x509(tmp_path: Path) -> None:
    import subprocess
    import sys

    keys = tmp_path / "tenants.json"
    keys.write_text(json.dumps({"tenants": {"acme": {"api_keys_sha256": [_sha256(ACME_KEY)]}}}))
    probe = (
        "import sys\n"
        "from function.contract.http_auth import HttpAuthSettings\n"
        "from function.http.auth import Authenticator\n"
        "import function.http.app, function.http.serve\n"
        "for given in ({}, {'keys_file': sys.argv[1]}):\n"
        "    settings = HttpAuthSettings.model_validate(given)\n"
        "    assert (Authenticator.from_settings(settings) is None) == (not given)\n"
        "    print('jwt' in sys.modules, 'cryptography.x509' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(keys)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"] * 2  # auth off, then API keys alone
