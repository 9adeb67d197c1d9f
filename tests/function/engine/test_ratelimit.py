"""A tenant's `max_rate`, counted in fixed windows from its stream's sequence numbers."""

from __future__ import annotations

from function.engine.ratelimit import TenantRates


def test_the_first_jobs_of_each_window_pass_and_the_rest_are_over() -> None:
    rates = TenantRates()
    rates.set_limits({"a": 3.0, "b": None})
    verdicts = [rates.over("a", seq, 100.2 + seq / 100) for seq in range(1, 7)]
    assert verdicts == [False, False, False, True, True, True]
    assert not rates.over("a", 7, 101.05)  # the next second starts a new window
    assert not any(rates.over("b", seq, 100.5) for seq in range(1, 50))  # unlimited
    assert not rates.over(None, 1, 100.0) and not rates.over("c", 9, 100.0)


def test_sequences_count_jobs_this_worker_never_saw() -> None:
    """Another worker took sequences 2-9: the stream's count still says 10 in the window."""
    rates = TenantRates()
    rates.set_limits({"a": 5.0})
    assert not rates.over("a", 1, 50.1)
    assert rates.over("a", 10, 50.3)


def test_a_rate_below_one_per_second_uses_a_longer_window() -> None:
    rates = TenantRates()
    rates.set_limits({"a": 0.5})  # one job per two seconds
    assert not rates.over("a", 1, 10.0)
    assert rates.over("a", 2, 11.5)
    assert not rates.over("a", 3, 12.1)


def test_a_redelivery_gets_the_same_verdict_and_limits_can_change() -> None:
    rates = TenantRates()
    rates.set_limits({"a": 1.0})
    assert not rates.over("a", 4, 7.0)
    assert rates.over("a", 5, 7.5)
    assert not rates.over("a", 4, 7.0)  # the same job again
    rates.set_limits({})
    assert not rates.over("a", 6, 7.6)
