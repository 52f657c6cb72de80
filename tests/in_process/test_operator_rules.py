"""The operator rules of saga/operator.py on their own: what each action applies to, and what makes an action whole."""

from __future__ import annotations

import re

import pytest

from saga.operator import MAX_REASON_LENGTH, ActionRefused, already_taken, check_action, decide
from saga.records import AccountRef, ActionKind, OperatorAction, Resolution, SagaRecord
from saga.states import SagaState


def saga(state: SagaState, epoch: int = 1, code: str | None = None) -> SagaRecord:
    return SagaRecord(
        "t-1", AccountRef("http://a", "alice"), AccountRef("http://b", "bob"), 100, state, epoch=epoch, code=code
    )


def action(
    kind: ActionKind, reason: str = "INC-1", resolution: Resolution | None = None, actor: str = "olga"
) -> OperatorAction:
    return OperatorAction("t-1", kind, actor, reason, 5_000, resolution)


def refusal(record: SagaRecord, taken: OperatorAction) -> ActionRefused:
    with pytest.raises(ActionRefused) as refused:
        decide(record, taken)
    return refused.value


def test_a_cancel_of_a_saga_no_run_claimed_ends_it_cancelled_saying_who_and_why() -> None:
    effect = decide(saga(SagaState.PENDING, epoch=0), action(ActionKind.CANCEL, "customer withdrew"))
    assert (effect.state, effect.code, effect.error) == (
        SagaState.CANCELLED,
        "cancelled",
        "cancelled by olga: customer withdrew",
    )


@pytest.mark.parametrize("state", [SagaState.PENDING, SagaState.DEBITING, SagaState.COMPENSATING])
def test_a_cancel_of_a_saga_a_run_took_up_is_refused_naming_its_state(state: SagaState) -> None:
    refused = refusal(saga(state, epoch=1), action(ActionKind.CANCEL))
    assert refused.code == "transfer_in_progress"
    assert state.value in refused.detail


@pytest.mark.parametrize("state", [SagaState.COMPLETED, SagaState.CANCELLED, SagaState.NEEDS_ATTENTION])
def test_a_cancel_of_a_saga_that_ended_is_refused_even_at_epoch_0(state: SagaState) -> None:
    refused = refusal(saga(state, epoch=0), action(ActionKind.CANCEL))
    assert refused.code == "transfer_already_ended"
    assert refused.detail == f"the transfer already ended {state.value}"


def test_a_retry_changes_no_state_and_says_who_asked() -> None:
    effect = decide(saga(SagaState.COMPENSATING), action(ActionKind.RETRY, "room made"))
    assert (effect.state, effect.code, effect.error) == (None, None, "retry asked by olga: room made")


def test_a_retry_of_anything_but_a_compensating_saga_is_refused_naming_its_state() -> None:
    refused = refusal(saga(SagaState.CREDITING), action(ActionKind.RETRY))
    assert refused.code == "transfer_not_retryable"
    assert refused.detail == "only a COMPENSATING transfer is retried; this one is CREDITING"


def test_a_resolution_ends_the_saga_resolved_with_how_as_its_code() -> None:
    taken = action(ActionKind.RESOLVE, "refund ref 9", Resolution.MOVED_BY_HAND)
    effect = decide(saga(SagaState.NEEDS_ATTENTION), taken)
    assert (effect.state, effect.code, effect.error) == (
        SagaState.RESOLVED,
        "moved_by_hand",
        "resolved (moved_by_hand) by olga: refund ref 9",
    )
    with pytest.raises(ValueError, match=r"^a resolution names how the saga was settled$"):
        decide(saga(SagaState.NEEDS_ATTENTION), action(ActionKind.RESOLVE))
    refused = refusal(saga(SagaState.RESOLVED), taken)
    assert refused.code == "transfer_not_awaiting_operator"
    assert "RESOLVED" in refused.detail


def test_an_action_asked_again_after_it_was_taken_is_recognised_and_nothing_else_is() -> None:
    assert already_taken(saga(SagaState.CANCELLED), action(ActionKind.CANCEL))
    assert not already_taken(saga(SagaState.COMPLETED), action(ActionKind.CANCEL))
    moved = action(ActionKind.RESOLVE, resolution=Resolution.MOVED_BY_HAND)
    assert already_taken(saga(SagaState.RESOLVED, code="moved_by_hand"), moved)
    assert not already_taken(saga(SagaState.RESOLVED, code="nothing_to_move"), moved)
    assert not already_taken(saga(SagaState.COMPENSATING), action(ActionKind.RETRY))


@pytest.mark.parametrize("reason", ["x", "x" * MAX_REASON_LENGTH, "ticket\t42", "  spaced  "])
def test_a_one_line_reason_of_1_to_500_characters_is_whole(reason: str) -> None:
    check_action(action(ActionKind.CANCEL, reason))


@pytest.mark.parametrize(
    ("taken", "message"),
    [
        (action(ActionKind.CANCEL, ""), f"a reason of 1-{MAX_REASON_LENGTH} characters is required"),
        (action(ActionKind.CANCEL, "   "), f"a reason of 1-{MAX_REASON_LENGTH} characters is required"),
        (action(ActionKind.CANCEL, "x" * (MAX_REASON_LENGTH + 1)), "a reason of 1-500 characters is required"),
        (action(ActionKind.CANCEL, "two\nlines"), "a reason is one line: no control characters"),
        (action(ActionKind.CANCEL, "bell\x07"), "a reason is one line: no control characters"),
        (action(ActionKind.CANCEL, "delete\x7f"), "a reason is one line: no control characters"),
        (action(ActionKind.RESOLVE), "a resolution (moved_by_hand or nothing_to_move) goes with resolve, and only"),
        (
            action(ActionKind.RETRY, resolution=Resolution.NOTHING_TO_MOVE),
            "a resolution (moved_by_hand or nothing_to_move) goes with resolve, and only with it",
        ),
        (action(ActionKind.CANCEL, actor=""), "an action names who took it"),
    ],
)
def test_an_incomplete_action_is_refused_saying_what_is_missing(taken: OperatorAction, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        check_action(taken)


def test_a_reason_with_a_character_past_127_is_taken() -> None:
    check_action(action(ActionKind.CANCEL, "café \x80 ok"))
