"""Log lines: readable on a terminal, JSON elsewhere, no null fields, chosen by env."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from function import telemetry
from function.telemetry import (
    LOG_FORMAT_ENV,
    JsonFormatter,
    TextFormatter,
    bind,
    configure_logging,
    log_format,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str = "ready in %.2fs", *args: object) -> logging.LogRecord:
    return logging.LogRecord("surge.worker", logging.INFO, __file__, 1, message, args, None)


@pytest.fixture(autouse=True)
def no_process_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields a worker started earlier in this process set for every line."""
    monkeypatch.setattr(telemetry, "_process_fields", {})


@pytest.fixture
def restore_surge_logger() -> Iterator[None]:
    logger = logging.getLogger("surge")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def test_json_lines_leave_out_fields_without_a_value() -> None:
    line = json.loads(JsonFormatter().format(_record("ready in %.2fs", 1.5)))
    assert set(line) == {"ts", "level", "logger", "msg"}  # was four more, each null
    assert line["msg"] == "ready in 1.50s" and line["level"] == "info"
    with bind(job_id="j-1", tenant="acme"):
        bound = json.loads(JsonFormatter().format(_record()))
    assert (bound["job_id"], bound["tenant"]) == ("j-1", "acme")
    assert "model_version" not in bound


def test_text_lines_are_time_level_logger_message_then_fields() -> None:
    plain = TextFormatter().format(_record("ready in %.2fs", 1.5))
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO    surge\.worker: ready in 1\.50s", plain)
    with bind(job_id="j-1"):
        assert TextFormatter().format(_record("job failed")).endswith("job failed job_id=j-1")


def test_the_format_follows_the_terminal_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    assert log_format(Terminal()) == ("text", None)
    assert log_format(io.StringIO()) == ("json", None)  # a container's stderr is no terminal
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    assert log_format(Terminal()) == ("json", None)
    monkeypatch.setenv(LOG_FORMAT_ENV, "TEXT")
    assert log_format(io.StringIO()) == ("text", None)
    monkeypatch.setenv(LOG_FORMAT_ENV, "xml")
    chosen, complaint = log_format(io.StringIO())
    assert chosen == "json" and complaint is not None and "neither json nor text" in complaint


@pytest.mark.usefixtures("restore_surge_logger")
def test_configure_logging_writes_text_to_a_terminal_and_json_to_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    terminal, pipe = Terminal(), io.StringIO()
    configure_logging("INFO", terminal)
    logging.getLogger("surge.worker").info("stopped")
    configure_logging("INFO", pipe)
    logging.getLogger("surge.worker").info("stopped")
    assert re.fullmatch(r"\S+ INFO    surge\.worker: stopped\n", terminal.getvalue())
    assert json.loads(pipe.getvalue())["msg"] == "stopped"
