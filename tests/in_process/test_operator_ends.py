"""The operator's two ends, CANCELLED and RESOLVED, in the batch audit, reconcile, the batch report and the CLI.

A CANCELLED saga never sent anything, so a service holding any entry under
its id is a finding. A RESOLVED saga was settled by hand: not judged against
its trail, listed by reconcile as settled by hand without paging anyone, and
money moved by hand outside it is reported, never a crash.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence

import pytest

from generated_client.transfers.models import TransferState
from saga import verify
from saga.cli import remote
from saga.cli.reconcile_command import _report
from saga.directory import ServiceDirectory
from saga.drive import batch
from saga.ledgers import LedgerMark
from saga.logs import MemorySagaLog
from saga.reconcile import EXIT_FOUND, EXIT_OK, LedgerReading, Reconciliation, _Reads, reconcile
from saga.records import AccountRef, ActionKind, Change, OperatorAction, Resolution, SagaRecord
from saga.run import TransferResult
from saga.states import TERMINAL_STATES, SagaState
from saga.verify import SagaEnd, TrailItem
from tests.support.aio import run

BANK = "http://bank.test"
ALICE, BOB = AccountRef(BANK, "alice", "bank"), AccountRef(BANK, "bob", "bank")
BEFORE = {BANK: {"alice": 1_000, "bob": 1_000}}

DEBITED = TrailItem("debit", "alice", 100, "applied")
CREDITED = TrailItem("credit", "bob", 100, "applied")
GIVEN_BACK = TrailItem("compensate_debit", "alice", 100, "reversed")
REFUSED = TrailItem("debit", "alice", 100, None)


def end(tid: str, state: SagaState, code: str | None = None) -> SagaEnd:
    return SagaEnd(tid, state, ALICE, BOB, 100, code)


def invariants(violations: Sequence[verify.Violation]) -> set[str]:
    return {violation.invariant for violation in violations}


# -- the batch audit (saga/verify.py) ---------------------------------------------------


def test_a_cancelled_saga_with_nothing_under_its_id_is_clean() -> None:
    assert verify.check(BEFORE, BEFORE, [end("t1", SagaState.CANCELLED)], {(BANK, "t1"): []}) == []


@pytest.mark.parametrize(
    "trail",
    [[DEBITED], [REFUSED], [DEBITED, GIVEN_BACK]],
    ids=["a debit", "a refused debit", "a debit given back"],
)
def test_any_entry_under_a_cancelled_sagas_id_is_a_violation(trail: list[TrailItem]) -> None:
    [violation] = verify.check_trails([end("t1", SagaState.CANCELLED)], {(BANK, "t1"): trail})
    assert violation.invariant == "no cancelled transfer moved money"
    assert violation.transaction_ids == ("t1",)
    assert f"alice@{BANK}" in violation.detail
    assert "a cancelled transfer sent nothing" in violation.detail


def test_a_resolved_sagas_trail_is_not_judged_against_its_end_nor_is_it_a_forgotten_saga() -> None:
    # Half a transfer under its id (the credit forgotten), settled by an operator who found nothing to move.
    resolved = end("t1", SagaState.RESOLVED, Resolution.NOTHING_TO_MOVE.value)
    trails = {(BANK, "t1"): [DEBITED]}
    after = {BANK: {"alice": 900, "bob": 1_000}}
    assert verify.check_trails([resolved], trails) == []
    violations = verify.check(BEFORE, after, [resolved], trails)
    assert "no service forgot a saga" not in invariants(violations)
    assert not any(name.startswith("audit agrees") for name in invariants(violations))
    # The money its trail holds is out of the total: a real loss, reported as such, with no excuse.
    [lost] = violations
    assert lost.invariant == "money conserved"
    assert "moved_by_hand" not in lost.detail
    assert lost.transaction_ids == ()


def test_a_resolved_saga_whose_trail_moved_the_transfer_predicts_the_balances_from_it() -> None:
    resolved = end("t1", SagaState.RESOLVED, Resolution.NOTHING_TO_MOVE.value)
    after = {BANK: {"alice": 900, "bob": 1_100}}
    assert verify.check(BEFORE, after, [resolved], {(BANK, "t1"): [DEBITED, CREDITED]}) == []


def test_money_moved_by_hand_is_reported_beside_the_difference_it_may_explain() -> None:
    # The credit was forgotten; the operator credited bob by hand, and one cent too much.
    resolved = end("t1", SagaState.RESOLVED, Resolution.MOVED_BY_HAND.value)
    trails = {(BANK, "t1"): [DEBITED]}
    after = {BANK: {"alice": 900, "bob": 1_101}}
    violations = verify.check(BEFORE, after, [resolved], trails)
    by_name = {violation.invariant: violation for violation in violations}
    assert set(by_name) == {"money conserved", "balances match the sagas"}
    assert "total was 2000, is 2001 (+1)" in by_name["money conserved"].detail
    assert "moved by hand" in by_name["money conserved"].detail
    assert by_name["money conserved"].transaction_ids == ("t1",)
    assert by_name["balances match the sagas"].account == f"bob@{BANK}"
    assert "moved_by_hand" in by_name["balances match the sagas"].detail


def test_a_balance_moved_by_hand_is_named_with_its_saga_and_counts_as_other_traffic_when_shared() -> None:
    resolved = end("t1", SagaState.RESOLVED, Resolution.MOVED_BY_HAND.value)
    trails = {(BANK, "t1"): [DEBITED]}
    after = {BANK: {"alice": 900, "bob": 1_100}}
    # The total holds; bob's balance is off the trail by what the operator moved, and is named with it.
    [violation] = verify.check(BEFORE, after, [resolved], trails)
    assert violation.invariant == "balances match the sagas"
    assert violation.detail.startswith(f"bob@{BANK} is 1100, the sagas say 1000; money was moved by hand outside t1")
    # On a shared service the audit vouches for the sagas, and the difference is put down to other traffic.
    judgement = verify.judge_shared(BEFORE, after, [resolved], trails)
    assert judgement == verify.Judgement([], (f"bob@{BANK}",))


def test_without_an_audit_a_resolved_sagas_part_is_named_unknown() -> None:
    resolved = end("t1", SagaState.RESOLVED, Resolution.NOTHING_TO_MOVE.value)
    after = {BANK: {"alice": 900, "bob": 1_100}}
    violations = verify.check(BEFORE, after, [resolved])
    assert invariants(violations) == {"balances match the sagas"}
    assert all("without an audit" in violation.detail for violation in violations)


def test_a_resolved_saga_on_accounts_outside_the_snapshot_is_no_crash() -> None:
    elsewhere = SagaEnd(
        "t1", SagaState.RESOLVED, AccountRef("http://gone", "carol"), BOB, 100, Resolution.MOVED_BY_HAND.value
    )
    trails = {("http://gone", "t1"): [TrailItem("debit", "carol", 100, "applied")], (BANK, "t1"): [CREDITED]}
    after = {BANK: {"alice": 1_000, "bob": 1_100}}
    violations = verify.check(BEFORE, after, [elsewhere], trails)
    assert invariants(violations) == {"money conserved"}
    assert violations[0].transaction_ids == ("t1",)


def test_a_resolved_saga_with_no_code_is_judged_as_settled_without_hand_moves() -> None:
    assert not end("t1", SagaState.RESOLVED).moved_by_hand
    assert not end("t1", SagaState.COMPLETED, Resolution.MOVED_BY_HAND.value).moved_by_hand
    assert end("t1", SagaState.RESOLVED, "moved_by_hand").moved_by_hand


# -- reconcile (saga/reconcile.py) ----------------------------------------------------------


def saga(tid: str) -> SagaRecord:
    return SagaRecord(tid, ALICE, BOB, 100, created_at_ms=1_000, updated_at_ms=1_000)


async def log_with_operator_ends() -> MemorySagaLog:
    log = MemorySagaLog()
    await log.submit(saga("cancelled-clean"))
    await log.submit(saga("cancelled-sent"))
    for tid in ("cancelled-clean", "cancelled-sent"):
        await log.act(OperatorAction(tid, ActionKind.CANCEL, "op-ada", "customer withdrew", 2_000))
    for tid in ("resolved", "waiting"):
        await log.create(saga(tid), SagaState.DEBITING)
        await log.commit(Change(tid, 1_500, SagaState.NEEDS_ATTENTION, error="bank answered from a new ledger"))
    await log.act(
        OperatorAction(
            "resolved", ActionKind.RESOLVE, "op-bo", "re-credited bob by hand", 3_000, Resolution.MOVED_BY_HAND
        )
    )
    return log


def fake_services(monkeypatch: pytest.MonkeyPatch, trails: Mapping[str, list[TrailItem]]) -> list[str]:
    """Services that answer at position 10 and with ``trails`` by transaction id; returns the ids read."""
    read: list[str] = []

    async def position(self: _Reads, key: str, account: AccountRef, marks: dict[str, LedgerMark]) -> LedgerReading:
        return LedgerReading(key, "ledger-1", 10, None)

    async def trail_of(self: _Reads, record: SagaRecord) -> dict[str, list[TrailItem]]:
        read.append(record.transaction_id)
        return {BANK: list(trails.get(record.transaction_id, []))}

    monkeypatch.setattr(_Reads, "position", position)
    monkeypatch.setattr(_Reads, "trails", trail_of)
    return read


def reconciled() -> Reconciliation:
    async def scenario() -> Reconciliation:
        return await reconcile(await log_with_operator_ends(), ServiceDirectory({}), token=None, since_ms=0)

    return run(scenario())


def test_reconcile_finds_a_cancelled_saga_a_service_holds_entries_of(monkeypatch: pytest.MonkeyPatch) -> None:
    read = fake_services(monkeypatch, {"cancelled-sent": [DEBITED, GIVEN_BACK]})
    outcome = reconciled()
    by_kind = {(finding.kind, finding.transaction_id) for finding in outcome.findings}
    assert by_kind == {("cancelled_moved_money", "cancelled-sent"), ("needs_attention", "waiting")}
    [sent] = [finding for finding in outcome.findings if finding.kind == "cancelled_moved_money"]
    assert "debit 100 of alice" in sent.detail
    assert sent.line().startswith("cancelled moved money: cancelled-sent: ")
    assert "cancelled-clean" in read, "a cancelled saga's trails are read, and an empty one is not lost"
    assert outcome.exit_code == EXIT_FOUND


def test_reconcile_lists_a_resolved_saga_as_settled_by_hand_with_who_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    read = fake_services(monkeypatch, {"resolved": [DEBITED]})
    outcome = reconciled()
    assert "resolved" not in read, "a saga settled by hand is not judged against the trails"
    assert "resolved" not in {finding.transaction_id for finding in outcome.findings}
    [settled] = outcome.settled_by_hand
    assert (settled.transaction_id, settled.resolution, settled.actor, settled.reason) == (
        "resolved",
        "moved_by_hand",
        "op-bo",
        "re-credited bob by hand",
    )
    assert settled.at == "1970-01-01T00:00:03.000Z"
    assert outcome.sagas == 4

    out = io.StringIO()
    _report(outcome, out, io.StringIO(), as_json=False)
    text = out.getvalue()
    assert (
        f"settled by hand: resolved (100 from alice@{BANK} to bob@{BANK}): moved_by_hand by op-bo "
        "at 1970-01-01T00:00:03.000Z: re-credited bob by hand"
    ) in text.splitlines()
    assert text.splitlines()[-1].endswith(": 1 needs attention; 1 settled by hand")

    out = io.StringIO()
    _report(outcome, out, io.StringIO(), as_json=True)
    [listed] = json.loads(out.getvalue())["settled_by_hand"]
    assert listed["resolution"] == "moved_by_hand"
    assert listed["actor"] == "op-bo"
    assert listed["reason"] == "re-credited bob by hand"


def test_a_saga_settled_by_hand_does_not_make_reconcile_exit_3_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_services(monkeypatch, {})

    async def scenario() -> Reconciliation:
        log = MemorySagaLog()
        await log.create(saga("resolved"), SagaState.DEBITING)
        await log.commit(Change("resolved", 1_500, SagaState.NEEDS_ATTENTION))
        await log.act(
            OperatorAction("resolved", ActionKind.RESOLVE, "op-bo", "trails square", 3_000, Resolution.NOTHING_TO_MOVE)
        )
        return await reconcile(log, ServiceDirectory({}), token=None, since_ms=0)

    outcome = run(scenario())
    assert outcome.findings == []
    assert [settled.resolution for settled in outcome.settled_by_hand] == ["nothing_to_move"]
    assert outcome.exit_code == EXIT_OK
    assert outcome.to_json()["settled_by_hand"][0]["transaction_id"] == "resolved"


# -- the batch report, and the CLI's states over the API ----------------------------------------


def result(tid: str, state: SagaState) -> TransferResult:
    return TransferResult(tid, state, ALICE, BOB, 100, ())


def test_the_batch_report_lists_every_terminal_state() -> None:
    assert set(batch._SHOWN_STATES) == TERMINAL_STATES
    results = [result("t1", SagaState.CANCELLED), result("t2", SagaState.RESOLVED), result("t3", SagaState.COMPLETED)]
    report = batch.BatchReport(results, BEFORE, BEFORE, 1.0, [])
    shown = report.to_json()
    assert (shown["cancelled"], shown["resolved"], shown["completed"], shown["pending"]) == (1, 1, 1, 0)
    rows = dict(line.split(None, 1) for line in report.render().splitlines() if line.split()[0].isalpha())
    assert rows["cancelled"].strip() == "1"
    assert rows["resolved"].strip() == "1"


def test_the_batch_reads_how_each_resolved_saga_was_settled_from_the_log() -> None:
    async def scenario() -> dict[str, str]:
        log = MemorySagaLog()
        await log.create(saga("t1"), SagaState.DEBITING)
        await log.commit(Change("t1", 1_500, SagaState.NEEDS_ATTENTION))
        await log.act(OperatorAction("t1", ActionKind.RESOLVE, "op", "by hand", 3_000, Resolution.MOVED_BY_HAND))
        return await batch._resolutions(log, [result("t1", SagaState.RESOLVED), result("t2", SagaState.COMPLETED)])

    assert run(scenario()) == {"t1": "moved_by_hand"}


def test_the_cli_waits_for_any_terminal_state_over_the_api() -> None:
    assert {"CANCELLED", "RESOLVED", "COMPLETED", "NEEDS_ATTENTION"} <= remote.FINAL_STATES
    assert {state.value for state in TERMINAL_STATES} == remote.FINAL_STATES
    assert TransferState.COMPLETED in remote.FINAL_STATES
    assert TransferState.PENDING not in remote.FINAL_STATES
