"""Retry policies, in the style of Temporal's ``RetryPolicy``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, one step's requests are retried.

    The delay before retry ``n`` (1-based) is
    ``initial_interval * backoff_coefficient ** (n - 1)``, capped at
    ``maximum_interval``, then spread by up to ``±jitter`` of itself so that
    sagas failing together do not retry in lockstep.
    """

    maximum_attempts: int | None = 5
    initial_interval: float = 0.02
    backoff_coefficient: float = 2.0
    maximum_interval: float = 1.0
    jitter: float = 0.2
    request_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.maximum_attempts is not None and self.maximum_attempts < 1:
            raise ValueError("maximum_attempts must be at least 1, or None for no limit")
        if self.initial_interval < 0 or self.maximum_interval < self.initial_interval:
            raise ValueError("intervals must satisfy 0 <= initial_interval <= maximum_interval")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if not (math.isfinite(self.request_timeout) and self.request_timeout > 0):
            raise ValueError("request_timeout must be a positive, finite number of seconds")

    def allows(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based) may be made."""
        return self.maximum_attempts is None or attempt <= self.maximum_attempts

    def delay_before(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt number ``attempt`` (no wait before the first)."""
        if attempt <= 1:
            return 0.0
        base = self._capped(attempt)
        if self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def longest_delay_before(self, attempt: int) -> float:
        """The most :meth:`delay_before` can wait before attempt ``attempt``: all the jitter added."""
        if attempt <= 1:
            return 0.0
        return self._capped(attempt) * (1 + self.jitter)

    def longest_step(self, urls: int = 1) -> float | None:
        """Seconds one step may take at most: every attempt's request out at each of the service's ``urls`` for
        the whole request timeout, and every backoff at its longest. None when any number of attempts is allowed.
        """
        if self.maximum_attempts is None:
            return None
        # No backoff precedes the first attempt: longest_delay_before counts it as 0.
        backoffs = sum(self.longest_delay_before(attempt) for attempt in range(self.maximum_attempts + 1))
        return self.maximum_attempts * urls * self.request_timeout + backoffs

    def _capped(self, attempt: int) -> float:
        try:
            grown = self.initial_interval * self.backoff_coefficient ** (attempt - 2)
        except OverflowError:
            # Far past the cap: the power no longer fits a float.
            return self.maximum_interval
        return min(grown, self.maximum_interval)


@dataclass(frozen=True)
class RetryPolicies:
    """One policy per kind of step."""

    debit: RetryPolicy = field(default_factory=lambda: RetryPolicy(maximum_attempts=5))
    credit: RetryPolicy = field(default_factory=lambda: RetryPolicy(maximum_attempts=3))
    #: Compensations retry until they succeed; a saga whose compensation
    #: cannot finish now stays in COMPENSATING for the next recovery.
    compensation: RetryPolicy = field(default_factory=lambda: RetryPolicy(maximum_attempts=None, maximum_interval=2.0))
