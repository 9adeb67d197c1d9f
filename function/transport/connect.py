"""Opening a NATS connection the same way everywhere: credentials, TLS, a bounded first try.

nats-py retries a first connection like a lost one: with reconnects on it loops for
ever on a wrong password, printing a traceback per try. `open_nats` makes the first
connection on its own terms: a refused credential or an untrusted certificate fails at
once with one clear line (`NatsConnectError`); an unreachable server is retried with
backoff until `wait_s` (`SURGE_CONNECT_WAIT_S`, else 3 s: a command says at once that
nothing answers), then `NatsUnreachable` names the URL and why; once connected,
reconnecting is switched on as asked. `progress_cb` hears each failed attempt in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS

from function.contract.nats_auth import NatsAuth, NatsAuthError, NatsConnectError, redact_url
from function.contract.settings import ENV_PREFIX, servers_from

__all__ = [
    "CONNECT_WAIT_ENV",
    "NatsUnreachable",
    "connect_options",
    "connect_wait_s",
    "open_nats",
    "tls_context",
]

log = logging.getLogger("surge.connect")


class _TlsCloseNoise(logging.Filter):
    """nats-py's protocol returns True from `eof_received`, so asyncio warns at every TLS
    close ("has no effect when using ssl"): noise, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_TlsCloseNoise())

ErrorCallback = Callable[[Exception], Awaitable[None]]
ProgressCallback = Callable[[str | None], None]
CONNECT_WAIT_ENV = f"{ENV_PREFIX}CONNECT_WAIT_S"  # also `WorkerSettings.connect_wait_s`
_DEFAULT_WAIT_S = 3.0
_RETRY_S = 0.25  # the first pause between attempts; doubled after each, up to _MAX_RETRY_S
_MAX_RETRY_S = 5.0
_TLS_TRIES = 4
_CLOSE_S = 1.0
_RECONNECT_WAIT_S = 2.0  # nats-py's default between reconnects


class NatsUnreachable(NatsConnectError):
    """No NATS server answered at `url` within `wait_s` (`reason`: the last attempt's)."""

    def __init__(self, url: str, wait_s: float, reason: str) -> None:
        self.url = redact_url(url)
        self.wait_s = wait_s
        self.reason = reason
        super().__init__(f"no NATS server answered at {self.url} within {wait_s:g} s ({reason})")


def connect_wait_s() -> float:
    """How long a first connection waits by default: `SURGE_CONNECT_WAIT_S` (what
    `surge --wait-for-nats` sets; `inf`: for ever), else 3 s."""
    text = os.environ.get(CONNECT_WAIT_ENV, "").strip()
    if not text:
        return _DEFAULT_WAIT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise NatsConnectError(f"{CONNECT_WAIT_ENV}={text[:32]!r}: give seconds (>= 0, or inf)")
    return value


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


def _reason(errors: list[Exception], exc: BaseException) -> str:
    """Why an attempt failed, in a few words (nats-py raises `NoServersError` and hands
    the socket's own error to the error callback)."""
    for error in [*errors, exc]:
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, socket.gaierror):
            return f"unknown host: {error.strerror or error}"
        if isinstance(error, TimeoutError):
            return "no answer: timed out"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _connect_once(
    servers: list[str], name: str, options: dict[str, Any]
) -> tuple[NATS, BaseException | None, list[Exception]]:
    """One attempt: the client, what failed (None: connected) and what nats-py reported
    to the error callback on the way (the socket's own errors); a failed client is closed."""
    nc = NATS()
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)
        await _quiet(exc)

    try:
        # No callbacks yet: closing a failed attempt must not look like a lost connection.
        # Each server is tried twice per attempt (nats-py would try 60 times, 2 s apart).
        await nc.connect(
            servers,
            name=name,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=2,
            error_cb=collect,
            **options,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _discard(nc)
        return nc, exc, errors
    return nc, None, errors


def _ambiguous(errors: list[BaseException]) -> bool:
    """A connection the server accepted, then dropped: a refusal, or a server going down."""
    return any(isinstance(error, ConnectionResetError | BrokenPipeError) for error in errors)


async def open_nats(
    url: str,
    auth: NatsAuth | None = None,
    *,
    name: str,
    wait_s: float | None = None,
    reconnect: bool = True,
    inbox_prefix: str | None = None,
    error_cb: ErrorCallback | None = None,
    progress_cb: ProgressCallback | None = None,
    **callbacks: Any,
) -> NATS:
    """Connect to `url` (comma-separated servers) with `auth` (default: from the environment).

    Raises `NatsConnectError` at once for refused credentials or TLS trouble, and
    `NatsUnreachable` after `wait_s` (default `connect_wait_s()`) when no server answers;
    attempts back off from 0.25 s to 5 s apart. `progress_cb` gets one line per failed
    attempt ("cannot reach NATS at ..."), and None once connected. Once connected,
    `error_cb` and `callbacks` (nats-py's `disconnected_cb` and friends) take over, and
    reconnects never give up if `reconnect`. `inbox_prefix` replaces `_INBOX` (a tenant's
    clients receive replies under their own).
    """
    auth = auth if auth is not None else NatsAuth()
    wait_s = connect_wait_s() if wait_s is None else wait_s
    try:
        options = connect_options(auth)
    except (NatsAuthError, ssl.SSLError, OSError) as exc:
        raise NatsConnectError(f"NATS credentials unusable: {exc}") from exc
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    servers = servers_from(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pause = _RETRY_S
    attempt = 0
    me = asyncio.current_task()
    while True:
        attempt += 1
        # A server refusing a TLS client (no certificate) is seen as a reset about half the
        # time: try again at once, so the refusal is named rather than waited out.
        for _ in range(_TLS_TRIES if "tls" in options else 1):
            nc, failure, errors = await _connect_once(servers, name, options)
            if failure is None or not _ambiguous([*errors, failure]):
                break
        if me is not None and me.cancelling():  # cancelled while nats-py was connecting,
            # which can swallow the CancelledError (Python 3.11's wait_for): stop here
            await _discard(nc)
            raise asyncio.CancelledError
        if failure is None:
            # From here on a lost connection is reconnected, as nats-py would after a first
            # connect with these options (read from `options` at each disconnect).
            nc.options["allow_reconnect"] = reconnect
            nc.options["max_reconnect_attempts"] = -1 if reconnect else 0
            nc.options["reconnect_time_wait"] = _RECONNECT_WAIT_S
            _attach(nc, error_cb or _quiet, callbacks)
            if progress_cb is not None:
                progress_cb(None)
            return nc
        for seen in [*errors, failure]:
            verdict = _verdict(seen, url, auth)
            if verdict is not None:
                raise NatsConnectError(verdict) from None
        reason = _reason(errors, failure)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise NatsUnreachable(url, wait_s, reason)
        pause, wait = min(pause * 2, _MAX_RETRY_S), min(pause, remaining)
        if progress_cb is not None:
            progress_cb(
                f"cannot reach NATS at {redact_url(url)} ({reason}); "
                f"attempt {attempt}, next in {wait:.2g} s"
            )
        await asyncio.sleep(wait)
