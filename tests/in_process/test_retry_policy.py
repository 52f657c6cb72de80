"""RetryPolicy as documented: how many attempts, how far apart, and which settings it refuses."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from saga import RetryPolicies, RetryPolicy


class FixedDraw(random.Random):
    """An rng whose every uniform(a, b) draw lands at ``fraction`` of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.draws.append((a, b))
        return a + (b - a) * self.fraction


def test_the_first_attempt_waits_for_nothing_and_draws_nothing() -> None:
    rng = FixedDraw(1.0)
    assert RetryPolicy(initial_interval=0.5, jitter=0.5).delay_before(1, rng) == 0.0
    assert RetryPolicy(initial_interval=0.5, jitter=0.5).delay_before(0, rng) == 0.0
    assert rng.draws == []


def test_delays_grow_by_the_coefficient_from_the_initial_interval_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_interval=0.5, backoff_coefficient=3.0, maximum_interval=10.0, jitter=0.0)
    rng = FixedDraw(1.0)
    assert [policy.delay_before(attempt, rng) for attempt in range(2, 7)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert rng.draws == [], "no jitter, no draw"


def test_jitter_spreads_a_delay_by_up_to_its_fraction_either_way() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=4.0, jitter=0.25)
    low, high, middle = FixedDraw(0.0), FixedDraw(1.0), FixedDraw(0.5)
    assert policy.delay_before(3, low) == pytest.approx(1.5)
    assert policy.delay_before(3, high) == pytest.approx(2.5)
    assert policy.delay_before(3, middle) == pytest.approx(2.0)
    assert low.draws == [(-0.25, 0.25)]
    # The cap applies before the jitter: a capped delay is spread too.
    assert policy.delay_before(9, high) == pytest.approx(5.0)


def test_a_full_jitter_may_bring_a_delay_down_to_zero_and_never_below() -> None:
    policy = RetryPolicy(initial_interval=1.0, maximum_interval=1.0, jitter=1.0)
    assert policy.delay_before(2, FixedDraw(0.0)) == 0.0
    assert policy.delay_before(2, FixedDraw(1.0)) == 2.0


def test_a_delay_far_past_the_cap_is_the_cap_where_the_power_would_overflow_a_float() -> None:
    policy = RetryPolicy(initial_interval=0.02, backoff_coefficient=2.0, maximum_interval=2.0, jitter=0.0)
    assert policy.delay_before(1_026, FixedDraw(0.5)) == 2.0
    assert policy.delay_before(1_000_000, FixedDraw(0.5)) == 2.0
    assert policy.longest_delay_before(1_000_000) == 2.0


def test_the_longest_delay_is_the_capped_one_with_all_the_jitter_added() -> None:
    policy = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=4.0, jitter=0.25)
    assert [policy.longest_delay_before(attempt) for attempt in range(0, 6)] == [0.0, 0.0, 1.25, 2.5, 5.0, 5.0]
    assert policy.longest_delay_before(4) == policy.delay_before(4, FixedDraw(1.0))


def test_the_longest_step_is_every_request_timing_out_at_every_url_and_every_backoff_at_its_longest() -> None:
    policy = RetryPolicy(
        maximum_attempts=4,
        initial_interval=1.0,
        backoff_coefficient=2.0,
        maximum_interval=3.0,
        jitter=0.5,
        request_timeout=10.0,
    )
    # Backoffs before attempts 2, 3 and 4: 1, 2 and 3 (capped) seconds, each with half of itself added.
    assert policy.longest_step() == 4 * 10.0 + 1.5 + 3.0 + 4.5
    assert policy.longest_step(urls=3) == 4 * 3 * 10.0 + 1.5 + 3.0 + 4.5
    assert RetryPolicy(maximum_attempts=1, request_timeout=2.0).longest_step() == 2.0
    assert RetryPolicy(maximum_attempts=None).longest_step() is None


def test_attempts_are_allowed_up_to_the_maximum_or_without_end() -> None:
    assert [RetryPolicy(maximum_attempts=1).allows(n) for n in (1, 2)] == [True, False]
    assert [RetryPolicy(maximum_attempts=3).allows(n) for n in (3, 4)] == [True, False]
    assert RetryPolicy(maximum_attempts=None).allows(10**9)


def test_the_default_policies_are_the_documented_ones() -> None:
    policies = RetryPolicies()
    assert (policies.debit.maximum_attempts, policies.credit.maximum_attempts) == (5, 3)
    assert (policies.compensation.maximum_attempts, policies.compensation.maximum_interval) == (None, 2.0)
    default = RetryPolicy()
    assert (
        default.maximum_attempts,
        default.initial_interval,
        default.backoff_coefficient,
        default.maximum_interval,
        default.jitter,
        default.request_timeout,
    ) == (5, 0.02, 2.0, 1.0, 0.2, 5.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"maximum_attempts": 1},
        {"initial_interval": 0.0, "maximum_interval": 0.0},
        {"initial_interval": 1.0, "maximum_interval": 1.0},
        {"backoff_coefficient": 1.0},
        {"jitter": 0.0},
        {"jitter": 1.0},
        {"request_timeout": 0.001},
    ],
)
def test_settings_at_their_limits_are_accepted(settings: dict[str, Any]) -> None:
    policy = RetryPolicy(**settings)
    assert all(getattr(policy, name) == value for name, value in settings.items())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"maximum_attempts": 0}, "maximum_attempts must be at least 1, or None for no limit"),
        ({"initial_interval": -0.1}, "intervals must satisfy 0 <= initial_interval <= maximum_interval"),
        (
            {"initial_interval": 1.0, "maximum_interval": 0.5},
            "intervals must satisfy 0 <= initial_interval <= maximum_interval",
        ),
        ({"backoff_coefficient": 0.99}, "backoff_coefficient must be at least 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"jitter": 1.01}, "jitter must be between 0 and 1"),
        ({"request_timeout": 0.0}, "request_timeout must be a positive, finite number of seconds"),
        ({"request_timeout": -1.0}, "request_timeout must be a positive, finite number of seconds"),
        ({"request_timeout": float("inf")}, "request_timeout must be a positive, finite number of seconds"),
    ],
)
def test_settings_past_their_limits_are_refused_with_the_reason(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        RetryPolicy(**settings)
