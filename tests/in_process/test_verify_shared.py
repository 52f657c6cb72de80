"""Judging a batch on a service that others use too: other traffic is named, broken money is still caught."""

from __future__ import annotations

from saga import verify
from saga.records import AccountRef
from saga.states import SagaState
from saga.verify import SagaEnd, TrailItem

BANK = "http://bank.test"
BEFORE = {BANK: {"alice": 1_000, "bob": 1_000, "carol": 1_000}}
ALICE_TO_BOB = SagaEnd("t1", SagaState.COMPLETED, AccountRef(BANK, "alice"), AccountRef(BANK, "bob"), 100)
TRAILS = {
    (BANK, "t1"): [TrailItem("debit", "alice", 100, "applied"), TrailItem("credit", "bob", 100, "applied")],
}


def test_money_others_moved_is_named_not_reported_as_broken() -> None:
    # The saga moved 100 from alice to bob; someone else moved 50 from bob to carol.
    after = {BANK: {"alice": 900, "bob": 1_050, "carol": 1_050}}
    judgement = verify.judge_shared(BEFORE, after, [ALICE_TO_BOB], TRAILS)
    assert judgement.violations == []
    assert judgement.other_traffic == (f"bob@{BANK}", f"carol@{BANK}")


def test_without_other_traffic_the_balances_are_compared() -> None:
    after = {BANK: {"alice": 900, "bob": 1_100, "carol": 1_000}}
    assert verify.judge_shared(BEFORE, after, [ALICE_TO_BOB], TRAILS) == verify.Judgement([])


def test_minted_money_is_still_broken_money() -> None:
    after = {BANK: {"alice": 900, "bob": 1_100, "carol": 1_100}}
    judgement = verify.judge_shared(BEFORE, after, [ALICE_TO_BOB], TRAILS)
    assert judgement.other_traffic == ()
    assert {violation.invariant for violation in judgement.violations} == {
        "money conserved",
        "balances match the sagas",
    }


def test_a_saga_whose_trail_disagrees_is_not_excused_as_other_traffic() -> None:
    # A compensated saga whose service reversed a debit it never took (patches/compensation-mints-money.patch),
    # while someone else happened to take the same 100 from carol: the total is unchanged.
    compensated = SagaEnd("t2", SagaState.COMPENSATED, AccountRef(BANK, "alice"), AccountRef(BANK, "bob"), 100)
    trails = {(BANK, "t2"): [TrailItem("compensate_debit", "alice", 100, "reversed")]}
    after = {BANK: {"alice": 1_100, "bob": 1_000, "carol": 900}}
    judgement = verify.judge_shared(BEFORE, after, [compensated], trails)
    assert judgement.other_traffic == ()
    assert {violation.invariant for violation in judgement.violations} == {
        "audit agrees with COMPENSATED",
        "balances match the sagas",
    }


def test_without_an_audit_nothing_vouches_for_the_sagas() -> None:
    after = {BANK: {"alice": 900, "bob": 1_050, "carol": 1_050}}
    judgement = verify.judge_shared(BEFORE, after, [ALICE_TO_BOB], None)
    assert judgement.other_traffic == ()
    assert [violation.invariant for violation in judgement.violations] == ["balances match the sagas"] * 2


def test_an_unfinished_saga_is_not_excused_either() -> None:
    pending = SagaEnd("t3", SagaState.COMPENSATING, AccountRef(BANK, "alice"), AccountRef(BANK, "bob"), 100)
    after = {BANK: {"alice": 900, "bob": 1_050, "carol": 1_050}}
    judgement = verify.judge_shared(BEFORE, after, [ALICE_TO_BOB, pending], TRAILS)
    assert judgement.other_traffic == ()
    assert "every saga terminal" in {violation.invariant for violation in judgement.violations}


def test_money_brought_in_by_an_opened_account_is_counted_as_brought_in_not_minted() -> None:
    # While the saga ran, an operator opened dora with 700: the total grew by exactly that.
    after = {BANK: {"alice": 900, "bob": 1_100, "carol": 1_000, "dora": 700}}
    opened = {BANK: {"dora": 700}}
    assert verify.check(BEFORE, after, [ALICE_TO_BOB], TRAILS, opened=opened) == []
    assert verify.judge_shared(BEFORE, after, [ALICE_TO_BOB], TRAILS, opened) == verify.Judgement([])


def test_an_opened_account_holding_more_than_it_was_opened_with_is_minted_money() -> None:
    after = {BANK: {"alice": 900, "bob": 1_100, "carol": 1_000, "dora": 750}}
    violations = verify.check(BEFORE, after, [ALICE_TO_BOB], TRAILS, opened={BANK: {"dora": 700}})
    assert {violation.invariant for violation in violations} == {"money conserved", "balances match the sagas"}
    assert "700 was brought in by accounts opened since" in violations[0].detail


def test_a_new_account_not_counted_as_opened_is_minted_money() -> None:
    after = {BANK: {"alice": 900, "bob": 1_100, "carol": 1_000, "dora": 700}}
    violations = verify.check(BEFORE, after, [ALICE_TO_BOB], TRAILS)
    assert {violation.invariant for violation in violations} == {"money conserved", "balances match the sagas"}
