"""The states of a transfer saga."""

from __future__ import annotations

from enum import StrEnum


class SagaState(StrEnum):
    PENDING = "PENDING"
    DEBITING = "DEBITING"
    CREDITING = "CREDITING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED})
