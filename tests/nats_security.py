"""Throw-away NATS security material made in the test: nkeys and operator-mode JWTs.

JWTs follow nats-io/jwt v2: `base64url(header).base64url(claims).base64url(ed25519 sig)`,
signed by the issuer's nkey; `jti` is the base32 SHA-512/256 of the claims without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

__all__ = ["new_nkey", "operator_setup"]


def new_nkey(prefix: int) -> nkeys.KeyPair:
    """A fresh nkey pair of the given kind (nkeys.PREFIX_BYTE_USER, _ACCOUNT, _OPERATOR)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any], **extra: Any) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()) - 60,
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
        **extra,
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(signature)}"


_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


def _creds(jwt: str, seed: bytes) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n------END USER NKEY SEED------\n"
    )


def operator_setup(folder: Path, *, user_expires_in_s: float | None = None) -> tuple[str, Path]:
    """Server config for operator mode (memory resolver) and one user's `.creds` file."""
    folder.mkdir(parents=True, exist_ok=True)
    operator = new_nkey(nkeys.PREFIX_BYTE_OPERATOR)
    system, account = new_nkey(nkeys.PREFIX_BYTE_ACCOUNT), new_nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    op_pub = operator.public_key.decode()
    jwts = {
        "operator": _jwt(operator, op_pub, "surge-test", {"type": "operator"}),
        "system": _jwt(
            operator,
            system.public_key.decode(),
            "SYS",
            {"type": "account", "limits": {**_UNLIMITED, "mem_storage": 0, "disk_storage": 0}},
        ),
        "account": _jwt(
            operator,
            account.public_key.decode(),
            "TENANT_A",
            {"type": "account", "limits": _UNLIMITED},
        ),
    }
    expiry = {"exp": int(time.time() + user_expires_in_s)} if user_expires_in_s is not None else {}
    user_jwt = _jwt(
        account,
        user.public_key.decode(),
        "alice",
        {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        **expiry,
    )
    creds = folder / "alice.creds"
    creds.write_text(_creds(user_jwt, user.seed))
    config = (
        f'operator: "{jwts["operator"]}"\n'
        f'system_account: "{system.public_key.decode()}"\n'
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {system.public_key.decode()}: "{jwts["system"]}"\n'
        f'  {account.public_key.decode()}: "{jwts["account"]}"\n'
        "}\n"
    )
    return config, creds
