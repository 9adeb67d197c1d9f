"""Opening a NATS connection the same way everywhere: credentials, TLS, a bounded first try.

nats-py retries a first connection like a lost one: with reconnects on it loops for
ever on a wrong password, printing a traceback per try. `open_nats` makes the first
connection on its own terms: a refused credential or an untrusted certificate fails at
once with one clear line (`NatsConnectError`); an unreachable server is retried until
`wait_s`; once connected, reconnecting is switched on as asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS

from function.contract.nats_auth import NatsAuth, NatsAuthError, NatsConnectError, redact_url
from function.contract.settings import servers_from

__all__ = ["connect_options", "open_nats", "tls_context"]

log = logging.getLogger("surge.connect")


class _TlsCloseNoise(logging.Filter):
    """nats-py's protocol returns True from `eof_received`, so asyncio warns at every TLS
    close ("has no effect when using ssl"): noise, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_TlsCloseNoise())

ErrorCallback = Callable[[Exception], Awaitable[None]]
_RETRY_S = 0.25
_CLOSE_S = 1.0
_RECONNECT_WAIT_S = 2.0  # nats-py's default between reconnects


def tls_context(auth: NatsAuth) -> ssl.SSLContext | None:
    """A client TLS context from the CA and (for mutual TLS) the client's certificate."""
    if not auth.tls:
        return None
    context = ssl.create_default_context(cafile=str(auth.tls_ca) if auth.tls_ca else None)
    if auth.tls_cert is not None and auth.tls_key is not None:
        context.load_cert_chain(str(auth.tls_cert), str(auth.tls_key))
    return context


def connect_options(auth: NatsAuth) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` that carry `auth` (checked first)."""
    auth.check()
    options: dict[str, Any] = {}
    if auth.creds is not None:
        options["user_credentials"] = str(auth.creds)
    if auth.nkey is not None:
        options["nkeys_seed"] = str(auth.nkey)
    # Secrets from files are read again at every (re)connect, so a rotated Secret takes
    # effect at the next reconnect (a .creds file is re-read by nats-py itself).
    if auth.user is not None:
        options["user"] = auth.user
        options["password"] = (
            auth.password_value if auth.password_file is not None else auth.password_value()
        )
    if auth.token_file is not None:
        options["token"] = auth.token_value
    elif auth.token is not None:
        options["token"] = auth.token_value()
    context = tls_context(auth)
    if context is not None:
        options["tls"] = context
    return options


def _verdict(exc: BaseException, url: str, auth: NatsAuth) -> str | None:
    """One line for an error retrying cannot fix, else None (the server may come up)."""
    where = f"NATS at {redact_url(url)}"
    text = str(exc).lower()
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or "certificate verify failed"
        return f"{where}: its TLS certificate is not trusted ({reason}); check SURGE_NATS_TLS_CA"
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS failed ({exc.reason or exc}); using {auth.describe()}"
    if "authorization violation" in text or "authentication expired" in text:
        return f"{where} refused the credentials (authorization violation); using {auth.describe()}"
    if "tls" in text and ("required" in text or "handshake" in text):
        return f"{where}: {exc}; set SURGE_NATS_TLS_CA (and a client certificate if it asks)"
    if isinstance(exc, nats.errors.Error) and "permissions violation" in text:
        return f"{where}: {exc}"
    return None


async def _discard(nc: NATS) -> None:
    """Close what a failed attempt left open (a refused connection keeps its socket)."""
    with contextlib.suppress(Exception):  # a failed TLS handshake can hang close(): bound it
        await asyncio.wait_for(nc.close(), _CLOSE_S)


def _attach(nc: NATS, error_cb: ErrorCallback, callbacks: dict[str, Any]) -> None:
    """Hand the connection's events to the caller (nats-py has no public setters)."""
    nc._error_cb = error_cb
    for name, callback in callbacks.items():
        attribute = f"_{name}"
        if not hasattr(nc, attribute):
            raise TypeError(f"open_nats() got an unexpected callback {name!r}")
        setattr(nc, attribute, callback)


async def _quiet(exc: Exception) -> None:
    log.debug("NATS error while connecting: %r", exc)


async def open_nats(
    url: str,
    auth: NatsAuth | None = None,
    *,
    name: str,
    wait_s: float = 10.0,
    reconnect: bool = True,
    inbox_prefix: str | None = None,
    error_cb: ErrorCallback | None = None,
    **callbacks: Any,
) -> NATS:
    """Connect to `url` (comma-separated servers) with `auth` (default: from the environment).

    Raises `NatsConnectError` at once for refused credentials or TLS trouble, and after
    `wait_s` when no server answers. Once connected, `error_cb` and `callbacks` (nats-py's
    `disconnected_cb` and friends) take over, and reconnects never give up if `reconnect`.
    `inbox_prefix` replaces `_INBOX` (a tenant's clients receive replies under their own).
    """
    auth = auth if auth is not None else NatsAuth()
    try:
        options = connect_options(auth)
    except (NatsAuthError, ssl.SSLError, OSError) as exc:
        raise NatsConnectError(f"NATS credentials unusable: {exc}") from exc
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    servers = servers_from(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    last: BaseException | None = None
    while True:
        nc = NATS()
        try:
            # No callbacks yet: closing a failed attempt must not look like a lost
            # connection. Each server is tried twice per attempt (nats-py would try 60
            # times, 2 s apart); this loop keeps to `wait_s`.
            await nc.connect(
                servers,
                name=name,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=2,
                error_cb=_quiet,
                **options,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            last = exc
            await _discard(nc)
            verdict = _verdict(exc, url, auth)
            if verdict is not None:
                raise NatsConnectError(verdict) from None
            if loop.time() + _RETRY_S >= deadline:
                break
            await asyncio.sleep(_RETRY_S)
            continue
        # From here on a lost connection is reconnected, as nats-py would after a first
        # connect with these options (read from `options` at each disconnect).
        nc.options["allow_reconnect"] = reconnect
        nc.options["max_reconnect_attempts"] = -1 if reconnect else 0
        nc.options["reconnect_time_wait"] = _RECONNECT_WAIT_S
        _attach(nc, error_cb or _quiet, callbacks)
        return nc
    reason = type(last).__name__ if last is not None else "no answer"
    raise NatsConnectError(
        f"no NATS server answered at {redact_url(url)} within {wait_s:g} s ({reason}: {last})"
    )
