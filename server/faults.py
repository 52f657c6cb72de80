"""Fault injection for ``/credit``, drawn with the ``random`` module."""

from __future__ import annotations

import random


class CreditFaults:
    """Decides, per new credit, whether to fail it before or after it commits.

    Each decision draws from its own seeded generator, so a run with a given
    seed makes the same decisions in the same order.
    """

    def __init__(self, before_commit_rate: float, after_commit_rate: float, seed: int | None = None) -> None:
        self.before_commit_rate = before_commit_rate
        self.after_commit_rate = after_commit_rate
        self._random = random.Random(seed)

    def fail_before_commit(self) -> bool:
        return self.before_commit_rate > 0 and self._random.random() < self.before_commit_rate

    def fail_after_commit(self) -> bool:
        return self.after_commit_rate > 0 and self._random.random() < self.after_commit_rate
