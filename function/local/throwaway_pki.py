"""Throw-away keys and certificates for a local secured stack (`surge nats --secure`) and tests.

A CA, a server certificate for 127.0.0.1/localhost, a client certificate for mutual TLS,
and a second CA that trusts none of them. EC P-256 keys, valid for a day. Never for
production: a real cluster gets its certificates from cert-manager or its own PKI.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from function.contract.tenancy import User, authorization_config, tenant_permissions, trusted

__all__ = [
    "LOCAL_USER",
    "Pki",
    "client_env",
    "local_secrets",
    "make_pki",
    "password_file",
    "secure_server_config",
]

LOCAL_USER = "surge"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusts nothing the server has

    def server_tls(self, *, verify_clients: bool) -> str:
        verify = "verify: true\n" if verify_clients else ""
        return (
            f'tls {{\n  cert_file: "{self.server_cert}"\n  key_file: "{self.server_key}"\n'
            f'  ca_file: "{self.ca}"\n  {verify}  timeout: 2\n}}\n'
        )


def make_pki(folder: Path) -> Pki:
    """Write a fresh CA, server and client certificates and keys into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("surge-test-ca", ca_key, None, ca=True)
    server_key, client_key = _key(), _key()
    other_key = _key()
    return Pki(
        ca=_write_cert(ca, folder / "ca.pem"),
        server_cert=_write_cert(
            _cert("nats-server", server_key, (ca, ca_key), server=True), folder / "server.pem"
        ),
        server_key=_write_key(server_key, folder / "server-key.pem"),
        client_cert=_write_cert(_cert("tenant-a", client_key, (ca, ca_key)), folder / "client.pem"),
        client_key=_write_key(client_key, folder / "client-key.pem"),
        other_ca=_write_cert(_cert("other-ca", other_key, None, ca=True), folder / "other-ca.pem"),
    )


def local_secrets(folder: Path) -> tuple[Pki, Path]:
    """A PKI and a password file for user `surge` in `folder` (made once, then reused)."""
    password = folder / "password"
    pki = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
        other_ca=folder / "other-ca.pem",
    )
    if not all(path.is_file() for path in (password, *dataclasses.astuple(pki))):
        pki = make_pki(folder)
        password.write_text(secrets.token_urlsafe(24) + "\n")
        password.chmod(0o600)
    return pki, password


def password_file(folder: Path, name: str) -> Path:
    """`folder/<name>.password`, made with a random password the first time."""
    path = folder / f"{name}.password"
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path


def secure_server_config(
    pki: Pki, password: Path, user: str = LOCAL_USER, tenants: Mapping[str, Path] | None = None
) -> str:
    """nats-server settings: mutual TLS, one trusted user (workers, the scaler) whose
    password is in `password`, and each tenant's user with its permissions."""
    if user in (tenants or {}):
        raise ValueError(f"a tenant may not be named {user!r}: that is the trusted user")
    users = {user: trusted(user, password.read_text().strip())}
    for tenant, secret in (tenants or {}).items():
        users[tenant] = User(
            user=tenant, password=secret.read_text().strip(), permissions=tenant_permissions(tenant)
        )
    return pki.server_tls(verify_clients=True) + authorization_config(users)


def client_env(pki: Pki, password: Path, url: str, user: str = LOCAL_USER) -> dict[str, str]:
    """The `SURGE_NATS_*` variables a client of that server needs."""
    return {
        "SURGE_NATS_URL": url,
        "SURGE_NATS_USER": user,
        "SURGE_NATS_PASSWORD_FILE": str(password),
        "SURGE_NATS_TLS_CA": str(pki.ca),
        "SURGE_NATS_TLS_CERT": str(pki.client_cert),
        "SURGE_NATS_TLS_KEY": str(pki.client_key),
    }
