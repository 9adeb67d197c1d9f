"""`surge nats` as a user runs it: a real process, a real nats-server child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from function.commands.nats import _watch
from function.local.nats_server import free_port

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


def _command(tmp_path: Path, port: int) -> list[str]:
    args = [sys.executable, "-m", "function", "nats", "--port", str(port)]
    return [*args, "--monitor-port", str(free_port()), "--store-dir", str(tmp_path / "nats")]


Started = tuple[subprocess.Popen[str], int, Path]


@pytest.fixture
def surge_nats(tmp_path: Path) -> Iterator[Callable[[], Started]]:
    """Starts `surge nats`; returns the process once it says it runs, the server's pid and
    its log file. Whatever a failed test leaves running is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start() -> Started:
        proc = subprocess.Popen(
            _command(tmp_path, free_port()),
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "COLUMNS": "400"},
        )
        procs.append(proc)
        assert proc.stderr is not None
        banner = [proc.stderr.readline(), proc.stderr.readline()]
        assert "Ctrl-C stops" in banner[0], banner
        pid = int(banner[0].split("pid ")[1].split(")")[0])
        log = Path(banner[1].removeprefix("log: ").strip())
        return proc, pid, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_port_something_listens_on_is_refused(tmp_path: Path) -> None:
    """Before, it reported success against whatever held the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(_command(tmp_path, port), capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"surge nats: 127.0.0.1:{port} (client port) is already in use, perhaps by another "
        "nats-server: stop it or choose another port"
    ]


def test_a_dead_server_ends_the_command_with_the_end_of_its_log(
    surge_nats: Callable[[], Started],
) -> None:
    proc, pid, log = surge_nats()
    os.kill(pid, signal.SIGKILL)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 1, rest
    assert f"exited with code {-signal.SIGKILL}; the end of {log}:" in rest
    assert "Server is ready" in rest  # the log's last lines


def test_sigterm_stops_the_server_and_the_log_is_named(
    surge_nats: Callable[[], Started], tmp_path: Path
) -> None:
    proc, pid, log = surge_nats()
    assert log == tmp_path / "nats" / "nats-server.log"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert _gone(pid)
    assert "Server is ready" in log.read_text()


class _ExitingNode:
    """A node whose server exits between one look and the next, as on a busy machine."""

    def __init__(self) -> None:
        self._exited = False

    @property
    def running(self) -> bool:
        self._exited = True  # the poll inside finds it gone
        return False

    @property
    def returncode(self) -> int | None:
        return -signal.SIGKILL if self._exited else None


def test_a_server_that_exits_between_two_looks_is_reported_with_its_exit_code() -> None:
    """CI saw `exited with code None`: the status was read before the poll that saw it
    exit."""
    node = _ExitingNode()
    found, code = _watch([node], every_s=0)  # type: ignore[list-item]
    assert found is node and code == -signal.SIGKILL
