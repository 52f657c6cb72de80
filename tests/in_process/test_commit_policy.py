"""The commit policy of each kind of log: what may ride with a later commit, and what never may."""

from __future__ import annotations

import pytest

from saga import MemorySagaLog
from saga.commit_policy import EXCLUSIVE_LOG, SHARED_LOG, CommitPolicy, commit_policy_for
from saga.states import TERMINAL_STATES, SagaState
from saga.steps import COMPENSATE_CREDIT, COMPENSATE_DEBIT, CREDIT, DEBIT


def test_a_log_one_process_holds_lets_forward_changes_ride_and_a_shared_log_lets_nothing_ride() -> None:
    assert commit_policy_for(MemorySagaLog(exclusive=True)) == EXCLUSIVE_LOG
    assert commit_policy_for(MemorySagaLog(exclusive=False)) == SHARED_LOG
    assert EXCLUSIVE_LOG.states_that_ride == {SagaState.DEBITING, SagaState.CREDITING}
    assert EXCLUSIVE_LOG.steps_sent_uncommitted == {DEBIT, CREDIT}
    assert not SHARED_LOG.states_that_ride
    assert not SHARED_LOG.steps_sent_uncommitted


@pytest.mark.parametrize("policy", [SHARED_LOG, EXCLUSIVE_LOG], ids=["shared", "exclusive"])
def test_no_log_sends_a_compensation_or_ends_a_saga_before_everything_is_durable(policy: CommitPolicy) -> None:
    # A service replays a reversed debit or credit as applied, so a recovery
    # that forgot a compensation would complete a transfer already given back.
    assert not policy.steps_sent_uncommitted & {COMPENSATE_DEBIT, COMPENSATE_CREDIT}
    assert not policy.states_that_ride & {SagaState.COMPENSATING, *TERMINAL_STATES}
