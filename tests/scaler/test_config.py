"""Trigger metadata and pre-warm plan parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from scaler.config import MetadataError, ScalerMetadata, metric_name
from scaler.prewarm import PrewarmPlan, parse_at, parse_duration


def test_metadata_defaults_and_camel_case_keys() -> None:
    meta = ScalerMetadata.parse(
        {
            "scalerAddress": "surge-scaler.surge.svc:9090",
            "function": "remove-bg",
            "targetDrainSeconds": "20",
            "replicaThroughput": "7.5",
            "maxReplicas": "4",
            "unknownKey": "ignored",
        }
    )
    policy = meta.policy()
    assert meta.function == "remove-bg"
    assert (policy.target_drain_s, policy.default_throughput, policy.max_replicas) == (20, 7.5, 4)
    assert policy.default_cold_start_s == 30.0
    assert metric_name("remove-bg") == "surge-remove-bg-replicas"


def test_metadata_errors_name_every_bad_key() -> None:
    with pytest.raises(MetadataError) as caught:
        ScalerMetadata.parse({"targetDrainSeconds": "0", "coldStartSeconds": "later"})
    message = str(caught.value)
    for key in ("function", "targetDrainSeconds", "coldStartSeconds"):
        assert key in message


@pytest.mark.parametrize("function", ["", "a.b", "a b", "jobs.>", "*"])
def test_function_must_be_one_subject_token(function: str) -> None:
    with pytest.raises(MetadataError):
        ScalerMetadata.parse({"function": function})


def test_durations_and_times() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h", "1d")] == [
        90,
        90,
        600,
        5400,
        86400,
    ]
    with pytest.raises(ValueError, match="duration"):
        parse_duration("ten minutes")
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_at("+10m", now) == now + timedelta(minutes=10)
    assert parse_at("2026-01-01T13:00:00Z") == datetime(2026, 1, 1, 13, tzinfo=UTC)
    assert parse_at("2026-01-01T13:00:00") == datetime(2026, 1, 1, 13, tzinfo=UTC)
    assert parse_at("1767272400") == datetime(2026, 1, 1, 13, tzinfo=UTC)
    with pytest.raises(ValueError, match="time"):
        parse_at("tomorrow")


def test_plans_need_a_rate_or_replicas_and_round_trip() -> None:
    start = datetime(2026, 1, 1, 13, tzinfo=UTC)
    with pytest.raises(ValidationError):
        PrewarmPlan.new("tiny", start=start, duration_s=60)
    plan = PrewarmPlan.new("tiny", start=start, duration_s=600, rate=12.5)
    again = PrewarmPlan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert plan.key == f"tiny.{plan.id}"
    window = plan.window()
    assert (window.start, window.end, window.rate) == (
        start.timestamp(),
        start.timestamp() + 600,
        12.5,
    )
