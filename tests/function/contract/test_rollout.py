"""The rollout record's steps, percentages and the routing of jobs by id."""

from __future__ import annotations

import pytest

from function.contract.rollout import (
    MAX_HISTORY,
    ModelRollout,
    PushedVersion,
    RolloutError,
    RolloutState,
    canary_point,
    parse_share,
    routes_to_canary,
)

V1, V2 = "a" * 16, "b" * 16


def _record() -> ModelRollout:
    record = ModelRollout(function="tiny")
    for version in (V1, V2):
        record = record.pushed(PushedVersion(version=version, size=10, source="m.onnx"))
    return record


def test_push_canary_promote() -> None:
    record = _record()
    assert [v.version for v in record.versions] == [V1, V2]
    assert record.pushed(PushedVersion(version=V1, size=10)) is record  # same file: no change
    canary = record.canary_of("bbbb", 0.1)  # a unique prefix names the version
    assert (canary.state, canary.canary, canary.canary_share) == (RolloutState.CANARY, V2, 0.1)
    promoted = canary.promoted()
    assert (promoted.state, promoted.stable, promoted.canary) == (RolloutState.STABLE, V2, None)
    assert promoted.history[-1].endswith(f"promoted {V2}")
    assert ModelRollout.model_validate_json(promoted.model_dump_json()) == promoted


def test_rollback_keeps_the_stable_version_and_the_reason() -> None:
    record = _record().canary_of(V1, 1.0).promoted().canary_of(V2, 0.5)
    back = record.rolled_back("canary failed 9 of 20 jobs")
    assert (back.stable, back.canary, back.canary_share) == (V1, None, 0.0)
    assert back.reason == "canary failed 9 of 20 jobs"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (lambda r: r.canary_of("cccc", 0.1), "has no model version 'cccc'"),
        (lambda r: r.canary_of("a", 0.1), "has no model version 'a'"),  # too short a prefix
        (lambda r: r.canary_of(V1, 0.0), "canary share"),
        (lambda r: r.promoted(), "no rollout in progress"),
        (lambda r: r.rolled_back(), "no rollout in progress"),
        (lambda r: r.canary_of(V1, 1.0).promoted().canary_of(V1, 0.2), "already the stable"),
    ],
)
def test_steps_that_do_not_apply_say_why(step: object, message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        step(_record())  # type: ignore[operator]


def test_history_is_bounded() -> None:
    record = _record()
    for _ in range(MAX_HISTORY):
        record = record.canary_of(V2, 0.5).rolled_back()
    assert len(record.history) == MAX_HISTORY


@pytest.mark.parametrize(
    ("text", "share"), [("10%", 0.1), ("10", 0.1), ("0.5%", 0.005), ("100%", 1.0)]
)
def test_parse_share(text: str, share: float) -> None:
    assert parse_share(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["0%", "-5%", "101%", "ten", ""])
def test_bad_shares_are_refused(text: str) -> None:
    with pytest.raises(RolloutError):
        parse_share(text)


def test_canary_share_within_tolerance_over_1000_job_ids() -> None:
    ids = [f"job-{i:05d}" for i in range(1000)]
    for share in (0.1, 0.5):
        routed = sum(routes_to_canary(job_id, share) for job_id in ids)
        assert abs(routed - 1000 * share) <= 3 * (1000 * share * (1 - share)) ** 0.5 + 1


def test_routing_is_stable_and_monotone_in_the_share() -> None:
    assert canary_point("job-1") == canary_point("job-1")  # every worker, every delivery
    ids = [f"j{i}" for i in range(500)]
    at_10 = {j for j in ids if routes_to_canary(j, 0.1)}
    at_50 = {j for j in ids if routes_to_canary(j, 0.5)}
    assert at_10 <= at_50  # raising the share only adds jobs to the canary
    assert not any(routes_to_canary(j, 0.0) for j in ids)
    assert all(routes_to_canary(j, 1.0) for j in ids)
