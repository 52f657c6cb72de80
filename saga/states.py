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
    #: A service's ledger changed under the saga (it forgot what it did under
    #: the saga's id): automation stops here, and an operator decides.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    #: An operator cancelled it before any run claimed it: nothing was ever sent.
    CANCELLED = "CANCELLED"
    #: An operator settled a NEEDS_ATTENTION saga by hand, and recorded how and why.
    RESOLVED = "RESOLVED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


#: The terminal states, in the order reports list them.
ENDS_IN_ORDER = (
    SagaState.COMPLETED,
    SagaState.COMPENSATED,
    SagaState.FAILED,
    SagaState.NEEDS_ATTENTION,
    SagaState.CANCELLED,
    SagaState.RESOLVED,
)
#: States no automation leaves: recovery and workers never resume them.
TERMINAL_STATES = frozenset(ENDS_IN_ORDER)

#: Terminal states that only an operator's action reaches.
OPERATOR_STATES = frozenset({SagaState.CANCELLED, SagaState.RESOLVED})
