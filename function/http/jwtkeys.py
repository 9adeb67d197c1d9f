"""JWT verification and the keys it uses: PEM public keys and certificates, JWKS files.

Imported only when JWT keys are configured, so a worker with auth off (or API keys alone)
never loads PyJWT and X.509.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from function.contract.http_auth import HTTP_AUTH_ENV_PREFIX, HttpAuthError, HttpAuthSettings

__all__ = ["MIN_RSA_BITS", "VerifyKey", "load_keys", "verify_jwt"]

MIN_RSA_BITS = 2048
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True)
class VerifyKey:
    """A public key, the JWT algorithms it may verify, and its key id."""

    key: Any  # a cryptography public key
    algorithms: frozenset[str]
    kid: str | None


def load_keys(settings: HttpAuthSettings) -> list[VerifyKey]:
    """The configured public keys; `HttpAuthError` when one is unusable."""
    allowed = frozenset(settings.jwt_algorithms)
    keys: list[VerifyKey] = []
    if settings.jwt_public_key is not None:
        keys += _load_pem(settings.jwt_public_key, allowed)
    if settings.jwks_file is not None:
        keys += _load_jwks(settings.jwks_file, allowed)
    return keys


def verify_jwt(token: str, keys: list[VerifyKey], settings: HttpAuthSettings) -> dict[str, Any]:
    """The claims of a JWT signed by one of `keys`, checked against `settings`; ValueError
    with the failed check, in fixed words, otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise ValueError("malformed token") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in settings.jwt_algorithms:
        raise ValueError("token algorithm is not allowed")
    keys = [
        k for k in keys if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)
    ]
    if not keys:
        raise ValueError("no configured key for the token's algorithm and key id")
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidSignatureError:
            continue
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(_reason(exc)) from None
        return claims
    raise ValueError("bad signature")


def _reason(exc: Exception) -> str:
    """Which check a JWT failed, in fixed words (PyJWT's own messages are not shown)."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token has no {exc.claim!r} claim"
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "token expired (exp)"),
        (jwt.ImmatureSignatureError, "token not yet valid (nbf or iat)"),
        (jwt.InvalidAudienceError, "wrong audience (aud)"),
        (jwt.InvalidIssuerError, "wrong issuer (iss)"),
        (jwt.InvalidIssuedAtError, "token's iat is not a number"),
        (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "malformed token"


def _algorithms_for(key: object) -> frozenset[str]:
    """The JWT algorithms a public key can verify."""
    if isinstance(key, rsa.RSAPublicKey):
        return frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return frozenset({_EC_ALGORITHMS[key.curve.name]})
    if isinstance(key, ed25519.Ed25519PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _usable(key: object, allowed: frozenset[str], where: str) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise HttpAuthError(f"{where}: an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
    algorithms = _algorithms_for(key) & allowed
    if not algorithms:
        raise HttpAuthError(f"{where}: a key none of the allowed JWT algorithms can use")
    return algorithms


def _load_pem(path: Path, allowed: frozenset[str]) -> list[VerifyKey]:
    """Public keys and certificates from a PEM file; a private key is refused."""
    where = f"{HTTP_AUTH_ENV_PREFIX}JWT_PUBLIC_KEY {str(path)!r}"
    blocks = list(_PEM_BLOCK.finditer(_read(path, where)))
    if not blocks:
        raise HttpAuthError(f"{where} holds no PEM block")
    keys = []
    for block in blocks:
        label = block.group(1).decode()
        if "PRIVATE" in label:
            raise HttpAuthError(f"{where} holds a private key: mount only the public key")
        try:
            if label == "CERTIFICATE":
                key: object = x509.load_pem_x509_certificate(block.group(0)).public_key()
            else:
                key = serialization.load_pem_public_key(block.group(0))
        except (ValueError, TypeError) as exc:
            raise HttpAuthError(f"{where}: a {label} block is not usable: {exc}") from None
        keys.append(VerifyKey(key, _usable(key, allowed, where), None))
    return keys


def _load_jwks(path: Path, allowed: frozenset[str]) -> list[VerifyKey]:
    """Signing keys from a JWKS file; symmetric and private keys are refused."""
    where = f"{HTTP_AUTH_ENV_PREFIX}JWKS_FILE {str(path)!r}"
    try:
        document = json.loads(_read(path, where))
    except ValueError as exc:
        raise HttpAuthError(f"{where} is not valid JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise HttpAuthError(f'{where} has no "keys" list')
    keys = []
    for index, entry in enumerate(entries):
        here = f"{where} key {index}"
        if not isinstance(entry, dict):
            raise HttpAuthError(f"{here} is not a JSON object")
        if entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") == "oct" or _PRIVATE_JWK_MEMBERS & entry.keys():
            raise HttpAuthError(f"{here} is a symmetric or private key: give public keys only")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise HttpAuthError(f"{here} is not usable ({type(exc).__name__})") from None
        algorithms = _usable(jwk.key, allowed, here) & {jwk.algorithm_name}
        if not algorithms:
            raise HttpAuthError(f"{here}: its algorithm {jwk.algorithm_name} is not allowed")
        kid = entry.get("kid")
        keys.append(VerifyKey(jwk.key, algorithms, kid if isinstance(kid, str) else None))
    if not keys:
        raise HttpAuthError(f"{where} has no signing key")
    return keys


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HttpAuthError(f"{where}: cannot read it: {exc.strerror}") from None
