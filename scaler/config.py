"""The scaler's own settings and the trigger metadata KEDA sends with every call.

`ScalerSettings` come from `SURGE_SCALER_*` env vars; the NATS URL, log level and the
consumer settings (ack wait, max deliver, ...) come from the worker's `SURGE_*` vars,
so the scaler creates consumers exactly as the workers would.

Ports: gRPC for KEDA on 9090 (it also serves the standard `grpc.health.v1` service),
Prometheus metrics on 9092 (the worker has 8080), and, when `health_port` is set, a
plaintext gRPC port that serves only `grpc.health.v1`: the kubelet's gRPC probes speak
no TLS, so with TLS on 9090 they need it (the manifests use 9091).

`ScalerMetadata` parses a ScaledObject trigger's `metadata` (all strings on the wire)::

    triggers:
      - type: external-push
        metadata:
          scalerAddress: surge-scaler.surge.svc:9090
          function: remove-bg            # required
          targetDrainSeconds: "10"       # drain the backlog within this time
          replicaThroughput: "7"         # jobs/s per replica until measured
          coldStartSeconds: "30"         # lead time until measured
          prewarmMarginSeconds: "5"      # extra lead for pre-warm windows
          poisonHoldSeconds: "120"       # how long retrying jobs alone keep it active
          activationRate: "0.1"          # arrivals (jobs/s) that keep it active
          maxReplicas: "4"               # cap on the demand (optional)

Other keys (scalerAddress, enableTLS, ...) are ignored.

TLS to KEDA: `tls_cert` + `tls_key` serve TLS; `tls_client_ca` also requires a client
certificate signed by that CA (mutual TLS); none of them is plaintext. `server_tls()`
reads and checks the files at start and raises `ScalerTlsError` in one line.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from function.contract.errors import SurgeError
from function.contract.settings import SurgeSettings
from scaler.policy import Policy

__all__ = [
    "GRPC_PORT",
    "METRICS_PORT",
    "MetadataError",
    "ScalerMetadata",
    "ScalerSettings",
    "ScalerTlsError",
    "ServerTls",
    "load_server_tls",
    "metric_name",
]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


GRPC_PORT = 9090
METRICS_PORT = 9092  # not the worker's 8080: both may run on one machine


class ScalerSettings(SurgeSettings):
    """Where the scaler listens and how often it looks (`SURGE_SCALER_<NAME>`)."""

    model_config = SettingsConfigDict(env_prefix="SURGE_SCALER_", extra="ignore")

    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(default=GRPC_PORT, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = Field(
        default=METRICS_PORT, ge=0, le=65535, description="0 turns the endpoint off."
    )
    health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Plaintext gRPC port (on grpc_host) serving only grpc.health.v1, for "
        "the kubelet's gRPC probes when the gRPC port is TLS; 0 turns it off.",
    )
    poll_interval_s: float = Field(default=0.1, gt=0)
    stale_after_s: float = Field(default=5.0, gt=0)
    plan_refresh_s: float = Field(default=2.0, gt=0)
    grace_s: float = Field(default=5.0, ge=0, description="Shutdown grace for open streams.")
    tls_cert: Path | None = Field(default=None, description="Server certificate chain (PEM).")
    tls_key: Path | None = Field(default=None, description="Its private key (PEM, unencrypted).")
    tls_client_ca: Path | None = Field(
        default=None, description="CA bundle (PEM): require client certificates it signed."
    )

    @field_validator("metrics_port", "health_port")
    @classmethod
    def _own_port(cls, value: int, info: ValidationInfo) -> int:
        """Two listeners on one port would fail at start: say which, now."""
        taken = {info.data.get(name): name for name in ("grpc_port", "metrics_port")}
        other = taken.get(value) if value else None
        if other is not None:
            raise ValueError(f"is also SURGE_SCALER_{other.upper()}; give each its own port")
        return value

    @field_validator("tls_cert", "tls_key", "tls_client_ca", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def server_tls(self) -> ServerTls | None:
        """The checked TLS material, or None for plaintext; raises `ScalerTlsError`."""
        return load_server_tls(self.tls_cert, self.tls_key, self.tls_client_ca)


class ScalerTlsError(SurgeError):
    """The scaler's TLS settings cannot be used: half a pair, or a file that does not load."""


@dataclass(frozen=True)
class ServerTls:
    """The scaler's certificate, key and optional client CA: paths and their PEM bytes."""

    cert: Path
    key: Path
    client_ca: Path | None
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = field(repr=False)

    def describe(self) -> str:
        """The mode and its files, for the log (never a key's content)."""
        if self.client_ca is None:
            return f"TLS (certificate {self.cert})"
        return f"mutual TLS (certificate {self.cert}, client CA {self.client_ca})"


_CERT = (b"-----BEGIN CERTIFICATE-----", "certificate")
_KEY = (b"PRIVATE KEY-----", "private key")


def load_server_tls(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> ServerTls | None:
    """Read and check the files (None: plaintext); `ScalerTlsError` names what is wrong."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ScalerTlsError(
                "a client CA (SURGE_SCALER_TLS_CLIENT_CA, mutual TLS) needs a certificate and key"
            )
        return None
    if cert is None or key is None:
        raise ScalerTlsError(
            "TLS needs both a certificate and its key (SURGE_SCALER_TLS_CERT and _KEY), not one"
        )
    cert_pem = _read(cert, "certificate", _CERT)
    key_pem = _read(key, "key", _KEY)
    if b"ENCRYPTED" in key_pem:
        raise ScalerTlsError(f"TLS key file {str(key)!r} is encrypted: give it unencrypted")
    _check_pair(cert, key)
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "client CA", _CERT)
        _check_ca(client_ca)
    return ServerTls(cert, key, client_ca, cert_pem, key_pem, ca_pem)


def _read(path: Path, what: str, pem: tuple[bytes, str]) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScalerTlsError(f"TLS {what} file {str(path)!r}: {exc.strerror or exc}") from None
    if pem[0] not in data:
        raise ScalerTlsError(f"TLS {what} file {str(path)!r} holds no PEM {pem[1]}")
    return data


def _check_pair(cert: Path, key: Path) -> None:
    """Load the pair as a TLS server does, so that a mismatch fails here and not in gRPC."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        why = "the key does not match the certificate"
        if exc.reason != "KEY_VALUES_MISMATCH":
            why = f"they do not load as a chain and its key ({exc.reason or exc.library})"
        raise ScalerTlsError(f"TLS certificate {str(cert)!r} and key {str(key)!r}: {why}") from None


def _check_ca(client_ca: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=client_ca)
    except ssl.SSLError as exc:
        why = exc.reason or exc.library
        raise ScalerTlsError(
            f"TLS client CA file {str(client_ca)!r}: no usable CA ({why})"
        ) from None


def _no_password() -> bytes:
    return b""  # an encrypted key then fails to load instead of prompting on a terminal


class MetadataError(SurgeError):
    """The trigger metadata is missing a key or has a bad value."""


class ScalerMetadata(BaseModel):
    """One external-push trigger's metadata, validated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    function: str
    target_drain_s: float = Field(default=10.0, gt=0, alias="targetDrainSeconds")
    throughput: float = Field(default=1.0, gt=0, alias="replicaThroughput")
    cold_start_s: float = Field(default=30.0, ge=0, alias="coldStartSeconds")
    prewarm_margin_s: float = Field(default=5.0, ge=0, alias="prewarmMarginSeconds")
    poison_hold_s: float = Field(default=120.0, ge=0, alias="poisonHoldSeconds")
    active_rate: float = Field(default=0.1, ge=0, alias="activationRate")
    max_replicas: int | None = Field(default=None, ge=1, alias="maxReplicas")

    @field_validator("function")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be one NATS subject token of letters, digits, '-' or '_'")
        return value

    @classmethod
    def parse(cls, metadata: dict[str, str]) -> ScalerMetadata:
        """Validate `metadata`; raise `MetadataError` naming every bad key."""
        try:
            return cls.model_validate({k: v for k, v in metadata.items() if v != ""})
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"]) or "metadata"
                problems.append(f"{key}: {error['msg']}")
            raise MetadataError("bad scalerMetadata: " + "; ".join(problems)) from None

    def policy(self) -> Policy:
        return Policy(
            target_drain_s=self.target_drain_s,
            default_throughput=self.throughput,
            default_cold_start_s=self.cold_start_s,
            prewarm_margin_s=self.prewarm_margin_s,
            poison_hold_s=self.poison_hold_s,
            active_rate=self.active_rate,
            max_replicas=self.max_replicas,
        )


def metric_name(function: str) -> str:
    """The metric Surge reports to KEDA for a function (KEDA prefixes `sN-` itself)."""
    return f"surge-{function}-replicas"
