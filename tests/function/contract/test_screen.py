"""`SURGE_SCREEN`: parsing, the rejection rule, and the one-line error for a bad value."""

from __future__ import annotations

import pytest

from function.contract.parse import is_valid_job_id
from function.contract.screen import Screen, input_sha256, screen_job_id
from function.contract.settings import InvalidSettings, WorkerSettings


def test_a_screen_parses_from_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGE_SCREEN", " nsfw : nsfw > 0.8 ")
    screen = WorkerSettings().screen
    assert screen == Screen(function="nsfw", score="nsfw", op=">", threshold=0.8)
    assert str(screen) == "nsfw:nsfw>0.8"
    assert WorkerSettings.from_mapping({"SURGE_SCREEN": ""}).screen is None
    assert WorkerSettings().model_copy(update={"screen": None}).screen is None


@pytest.mark.parametrize(
    ("rule", "score", "rejected"),
    [
        ("nsfw:nsfw>0.8", 0.81, True),
        ("nsfw:nsfw>0.8", 0.8, False),
        ("nsfw:nsfw>=0.8", 0.8, True),
        ("nsfw:sfw<0.2", 0.1, True),
        ("nsfw:sfw<=0.2", 0.3, False),
        ("nsfw:nsfw>0.8", float("nan"), True),
    ],
)
def test_the_rule_says_when_to_reject(rule: str, score: float, rejected: bool) -> None:
    assert Screen.parse(rule).rejects(score) is rejected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("nsfw", "not a screen; write it as function:score<op>threshold"),
        ("nsfw:nsfw=0.8", "not a screen"),
        ("nsfw:nsfw>high", "not a screen"),
        ("nsfw:nsfw>1.2.3", "threshold '1.2.3' is not a number"),
        ("nsfw:nsfw>1e999", "threshold '1e999' is not a finite number"),
        ("x" * 500, "not a screen"),
    ],
)
def test_a_bad_screen_is_one_clear_line(value: str, problem: str) -> None:
    with pytest.raises(InvalidSettings) as caught:
        WorkerSettings.from_mapping({"SURGE_SCREEN": value})
    line = str(caught.value)
    assert line.startswith("invalid settings: SURGE_SCREEN ") and problem in line
    assert "\n" not in line and len(line) < 200


def test_a_screen_job_id_is_bound_to_the_job_id_and_its_bytes() -> None:
    first = screen_job_id("job-1", input_sha256(b"photo"))
    assert first == screen_job_id("job-1", input_sha256(b"photo")) and first.startswith("screen-")
    assert is_valid_job_id(first) and len(first) == len("screen-") + 40
    assert first != screen_job_id("job-1", input_sha256(b"another photo"))  # same id, other input
    assert first != screen_job_id("job-2", input_sha256(b"photo"))
    assert screen_job_id("a", input_sha256(b"b\0c")) != screen_job_id(
        "a\0b", input_sha256(b"c")
    )  # no ambiguity


@pytest.mark.parametrize(("value", "via"), [(None, "worker"), ("queue", "queue")])
def test_the_screen_runs_in_the_worker_unless_told_to_go_through_the_queue(
    value: str | None, via: str
) -> None:
    env = {"SURGE_SCREEN": "nsfw:nsfw>0.8"} | ({"SURGE_SCREEN_VIA": value} if value else {})
    assert WorkerSettings.from_mapping(env).screen_via == via
    with pytest.raises(InvalidSettings, match="SURGE_SCREEN_VIA 'gpu'"):
        WorkerSettings.from_mapping({"SURGE_SCREEN_VIA": "gpu"})


def test_a_function_screened_by_itself_through_the_queue_is_refused() -> None:
    env = {"SURGE_FUNCTION": "nsfw", "SURGE_SCREEN": "nsfw:nsfw>0.5"}
    assert WorkerSettings.from_mapping(env).screen_via == "worker"  # harmless in the worker
    with pytest.raises(InvalidSettings, match="screened by itself through the queue"):
        WorkerSettings.from_mapping({**env, "SURGE_SCREEN_VIA": "queue"})
