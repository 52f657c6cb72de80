"""What an operator may do to a saga, decided from the saga alone.

Every log applies :func:`decide` inside the one write that records the
action, so the rule and the state it reads cannot drift apart: a cancel lands
only while no run has claimed the saga (epoch 0, the same condition a claim
breaks), and a resolution only while the saga still waits for one.

- **cancel**: a saga no run has claimed yet ends CANCELLED. A PENDING state
  alone is not enough: a run may have a debit in flight before it logs
  DEBITING.
- **retry**: a COMPENSATING saga is tried again at once: one that waits after
  a blocked compensation becomes claimable now, and a run in its backoff is
  woken.
- **resolve**: a NEEDS_ATTENTION saga ends RESOLVED, with how it was settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from saga.records import ActionKind, OperatorAction, SagaRecord
from saga.states import SagaState

RefusalCode = Literal[
    "transfer_in_progress", "transfer_already_ended", "transfer_not_retryable", "transfer_not_awaiting_operator"
]

#: The longest reason an operator may give, in characters.
MAX_REASON_LENGTH: Final = 500


class ActionRefused(Exception):
    """The saga is not in a state the action applies to; nothing was recorded."""

    def __init__(self, code: RefusalCode, detail: str) -> None:
        super().__init__(detail)
        self.code: RefusalCode = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Effect:
    """What the action changes: the state it ends in (None: unchanged), and why, as a code and a line."""

    state: SagaState | None
    code: str | None
    error: str


def decide(saga: SagaRecord, action: OperatorAction) -> Effect:
    """The effect of ``action`` on ``saga`` as the log holds it now; ActionRefused if it does not apply."""
    if action.kind is ActionKind.CANCEL:
        return _cancel(saga, action)
    if action.kind is ActionKind.RETRY:
        return _retry(saga, action)
    return _resolve(saga, action)


def _cancel(saga: SagaRecord, action: OperatorAction) -> Effect:
    if saga.state.is_terminal:
        raise ActionRefused("transfer_already_ended", f"the transfer already ended {saga.state.value}")
    if saga.epoch != 0:
        # Claimed once: a debit may be in flight whatever state is logged.
        raise ActionRefused(
            "transfer_in_progress",
            f"a run already took the transfer up (it is {saga.state.value}); it cannot be cancelled",
        )
    return Effect(SagaState.CANCELLED, "cancelled", f"cancelled by {action.actor}: {action.reason}")


def _retry(saga: SagaRecord, action: OperatorAction) -> Effect:
    if saga.state is not SagaState.COMPENSATING:
        raise ActionRefused(
            "transfer_not_retryable", f"only a COMPENSATING transfer is retried; this one is {saga.state.value}"
        )
    return Effect(None, None, f"retry asked by {action.actor}: {action.reason}")


def _resolve(saga: SagaRecord, action: OperatorAction) -> Effect:
    if saga.state is not SagaState.NEEDS_ATTENTION:
        raise ActionRefused(
            "transfer_not_awaiting_operator",
            f"only a NEEDS_ATTENTION transfer is resolved; this one is {saga.state.value}",
        )
    if action.resolution is None:
        raise ValueError("a resolution names how the saga was settled")
    how = action.resolution.value
    return Effect(SagaState.RESOLVED, how, f"resolved ({how}) by {action.actor}: {action.reason}")


def already_taken(saga: SagaRecord, action: OperatorAction) -> bool:
    """Whether ``action`` was taken before with the same effect: asked again after a lost answer, it is no conflict."""
    if action.kind is ActionKind.CANCEL:
        return saga.state is SagaState.CANCELLED
    if action.kind is ActionKind.RESOLVE:
        resolution = action.resolution
        return saga.state is SagaState.RESOLVED and resolution is not None and saga.code == resolution.value
    return False


def check_action(action: OperatorAction) -> None:
    """Raise ValueError unless ``action`` is complete: a reason of 1-500 characters, a resolution iff resolving."""
    reason = action.reason.strip()
    if not reason or len(action.reason) > MAX_REASON_LENGTH:
        raise ValueError(f"a reason of 1-{MAX_REASON_LENGTH} characters is required")
    if any((ord(character) < 32 and character != "\t") or ord(character) == 127 for character in action.reason):
        raise ValueError("a reason is one line: no control characters")
    if (action.kind is ActionKind.RESOLVE) != (action.resolution is not None):
        raise ValueError("a resolution (moved_by_hand or nothing_to_move) goes with resolve, and only with it")
    if not action.actor:
        raise ValueError("an action names who took it")
