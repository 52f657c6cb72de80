"""The invariants a finished run must leave true, judged from the ledgers themselves.

The simulator reads each service's :class:`~server.ledger.Ledger` directly
(it runs in the same process), and judges with :mod:`saga.verify` where the
check is the one every other harness uses: money conserved, no negative
balance, every saga terminal, balances exactly as the completed sagas say,
and audit trails agreeing with each saga's end state. On top of those it
checks what only a ledger's insides show: no (transaction_id, operation)
moved money twice, and each ledger's own self-check.

Deadlines and operators are judged from the network's record of every
request (:class:`~saga.simulation.network.SentRequest`, stamped with the
sender's clock) and each saga's history in the log: no debit or credit
goes out at or after its saga's deadline, each end carries the code its
history calls for, a cancel and a claim never both land on one saga, and a
CANCELLED saga never sent anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from saga import verify
from saga.records import ActionKind, Attempt, Event, SagaRecord
from saga.retry import RetryPolicies
from saga.simulation.network import SentRequest
from saga.simulation.workload import service_url
from saga.states import SagaState
from saga.steps import CREDIT, DEBIT
from saga.workflow import DEADLINE_EXCEEDED
from server.ledger import Entry, InvariantViolation, Ledger, Operation


def saga_ends(records: Sequence[SagaRecord]) -> list[verify.SagaEnd]:
    return [verify.SagaEnd.of(record) for record in records]


def balances_of(ledgers: Mapping[str, Ledger]) -> dict[str, dict[str, int]]:
    """service URL -> user_id -> balance, as :mod:`saga.verify` wants them."""
    return {
        service_url(host): {account.user_id: account.balance for account in ledger.accounts()}
        for host, ledger in ledgers.items()
    }


def audit_trails(
    ledgers: Mapping[str, Ledger], sagas: Sequence[verify.SagaEnd]
) -> dict[tuple[str, str], list[verify.TrailItem]]:
    """(service URL, transaction_id) -> that service's audit trail of the saga."""
    by_url = {service_url(host): ledger for host, ledger in ledgers.items()}
    trails: dict[tuple[str, str], list[verify.TrailItem]] = {}
    for saga in sagas:
        for url in (saga.source.service_url, saga.target.service_url):
            ledger = by_url.get(url)
            if ledger is None or (url, saga.transaction_id) in trails:
                continue
            trails[(url, saga.transaction_id)] = [
                verify.TrailItem(entry.operation, entry.user_id, entry.amount, entry.outcome)
                for entry in ledger.trail(saga.transaction_id)
            ]
    return trails


def applied_twice(journals: Mapping[str, Iterable[Entry]]) -> list[verify.Violation]:
    """Every (transaction_id, operation) that moved money more than once on one service.

    ``journals`` maps each service host to its ledger's journal.
    """
    violations = []
    for host, journal in journals.items():
        moved: Counter[tuple[str, Operation]] = Counter((entry.transaction_id, entry.operation) for entry in journal)
        for (transaction_id, operation), times in moved.items():
            if times > 1:
                violations.append(
                    verify.Violation(
                        "no operation applied twice",
                        f"{operation} of {transaction_id} moved money {times} times on {host}",
                        (transaction_id,),
                    )
                )
    return violations


def unlogged_money(ledgers: Mapping[str, Ledger], records: Sequence[SagaRecord]) -> list[verify.Violation]:
    """Money moved under a transaction id the saga log has never heard of: nothing can ever settle it."""
    logged = {record.transaction_id for record in records}
    violations = []
    for host, ledger in ledgers.items():
        strangers = list(
            dict.fromkeys(entry.transaction_id for entry in ledger.journal() if entry.transaction_id not in logged)
        )
        if strangers:
            violations.append(
                verify.Violation(
                    "money moves only for logged sagas",
                    f"{host} moved money for {len(strangers)} transaction ids missing from the saga log",
                    tuple(strangers[:10]),
                )
            )
    return violations


def ledger_self_checks(ledgers: Mapping[str, Ledger]) -> list[verify.Violation]:
    violations = []
    for host, ledger in ledgers.items():
        try:
            ledger.check_invariants()
        except InvariantViolation as broken:
            violations.append(verify.Violation("ledger agrees with its journal", f"{host}: {broken}"))
    return violations


def check_run(
    opening: Mapping[str, Mapping[str, int]], ledgers: Mapping[str, Ledger], records: Sequence[SagaRecord]
) -> list[verify.Violation]:
    """Every invariant the run broke; ``opening`` is the balances before it, by service URL."""
    sagas = saga_ends(records)
    violations = verify.check(opening, balances_of(ledgers), sagas, audit_trails(ledgers, sagas), sole_traffic=True)
    return (
        violations
        + applied_twice({host: ledger.journal() for host, ledger in ledgers.items()})
        + unlogged_money(ledgers, records)
        + ledger_self_checks(ledgers)
    )


def check_epochs(histories: Mapping[str, Sequence[Event]]) -> list[verify.Violation]:
    """What the leases promise, judged from each saga's history in the log.

    No commit lands from an epoch older than the saga's latest claim (a
    stale owner's decision), and no epoch has two owners committing in it.
    """
    violations = []
    for transaction_id, history in histories.items():
        claimed = 0
        owners: dict[int, set[str | None]] = {}
        for event in history:
            if event.epoch is None or event.kind == "action":
                # An operator's action is no driver's commit: it names the epoch it found.
                continue
            if event.kind == "claim":
                claimed = max(claimed, event.epoch)
                continue
            owners.setdefault(event.epoch, set()).add(event.owner)
            if event.epoch < claimed:
                violations.append(
                    verify.Violation(
                        "no commit from a stale epoch",
                        f"{event.owner} committed {event.kind} of {transaction_id} at epoch {event.epoch} "
                        f"after epoch {claimed} was claimed",
                        (transaction_id,),
                    )
                )
                break
        for epoch, committers in sorted(owners.items()):
            if len(committers) > 1:
                violations.append(
                    verify.Violation(
                        "one owner per epoch",
                        f"{transaction_id} had commits from {sorted(map(str, committers))} at epoch {epoch}",
                        (transaction_id,),
                    )
                )
    return violations


def _requests_by_saga(sent: Iterable[SentRequest]) -> dict[str, list[SentRequest]]:
    by_saga: dict[str, list[SentRequest]] = defaultdict(list)
    for request in sent:
        by_saga[request.transaction_id].append(request)
    return by_saga


def check_deadlines(
    records: Sequence[SagaRecord],
    histories: Mapping[str, Sequence[Event]],
    sent: Sequence[SentRequest],
    policies: RetryPolicies,
) -> list[verify.Violation]:
    """What a deadline promises (saga/workflow.py), judged from the network's record and each saga's history.

    1. No debit or credit of a saga reaches the network sent at or after its
       deadline, on the clock of the orchestrator that sent it.
    2. A saga no run ever resumed that never tried a debit (none reached the
       network, none is logged) and that ended by itself (not CANCELLED, not
       NEEDS_ATTENTION) ended FAILED ``deadline_exceeded``; or COMPENSATED
       ``deadline_exceeded`` if a trail it read first was out of reach. And
       FAILED ``deadline_exceeded`` never follows a debit that reached the network.
    3. A saga ends with ``deadline_exceeded`` exactly when the deadline cut
       its forward part short: the run that decided to stop (FAILED or
       COMPENSATING) did so at or after the deadline, while the step in hand
       had no final answer and attempts left (or none at all yet).
    4. FAILED and COMPENSATED sagas carry a code, CANCELLED ones ``cancelled``.
    """
    requests = _requests_by_saga(sent)
    violations: list[verify.Violation] = []
    for record in records:
        tid = record.transaction_id
        mine = requests.get(tid, [])
        if record.state in (SagaState.FAILED, SagaState.COMPENSATED) and record.code is None:
            violations.append(
                verify.Violation("every end has a code", f"{tid} ended {record.state} without one", (tid,))
            )
        if record.state is SagaState.CANCELLED and record.code != "cancelled":
            violations.append(
                verify.Violation("every end has a code", f"{tid} is CANCELLED with code {record.code}", (tid,))
            )
        deadline_ms = record.deadline_ms
        if deadline_ms is None:
            if record.code == DEADLINE_EXCEEDED:
                violations.append(
                    verify.Violation("deadline codes agree with the history", f"{tid} has no deadline", (tid,))
                )
            continue
        late = [
            (request, request.sender_ms - deadline_ms)
            for request in mine
            if request.step in (DEBIT, CREDIT) and request.sender_ms is not None and request.sender_ms >= deadline_ms
        ]
        if late:
            first, after_ms = late[0]
            violations.append(
                verify.Violation(
                    "no forward request after the deadline",
                    f"{first.step} of {tid} sent {after_ms}ms after its deadline "
                    f"(at {first.at_ms}ms virtual, to {first.host}); {len(late)} such requests",
                    (tid,),
                )
            )
        debit_sent = any(request.step == DEBIT for request in mine)
        history = histories.get(tid, [])
        # A debit attempt can be logged that never reached the network: a paused
        # orchestrator's request times out before the process sends anything.
        debit_tried = debit_sent or any(event.attempt is not None and event.attempt.step == DEBIT for event in history)
        ended_by_itself = record.epoch <= 1 and record.state in _AUTOMATIC_ENDS
        # Before it fails, the saga reads the trails (a log restored from a backup may have forgotten
        # a run that sent a debit): one it could not read leaves it to compensate, to be safe.
        unread = any(request.step == "read" and request.refused for request in mine)
        ends = {(SagaState.FAILED, DEADLINE_EXCEEDED)} | (
            {(SagaState.COMPENSATED, DEADLINE_EXCEEDED)} if unread else set()
        )
        if ended_by_itself and not debit_tried and (record.state, record.code) not in ends:
            violations.append(
                verify.Violation(
                    "a saga whose debit never went out before its deadline fails",
                    f"{tid} sent no debit and ended {record.state} ({record.code}), not FAILED {DEADLINE_EXCEEDED}",
                    (tid,),
                )
            )
        if record.state is SagaState.FAILED and record.code == DEADLINE_EXCEEDED and debit_sent:
            violations.append(
                verify.Violation(
                    "a saga whose debit never went out before its deadline fails",
                    f"{tid} ended FAILED {DEADLINE_EXCEEDED} although its debit reached the network",
                    (tid,),
                )
            )
        if history and record.state in (SagaState.FAILED, SagaState.COMPENSATED):
            cut_short = _cut_short_by(history, deadline_ms, policies)
            if cut_short is not None and cut_short != (record.code == DEADLINE_EXCEEDED):
                violations.append(
                    verify.Violation(
                        "deadline codes agree with the history",
                        f"{tid} ended {record.state} with code {record.code}, though the deadline "
                        + ("cut it short" if cut_short else "did not cut it short"),
                        (tid,),
                    )
                )
    return violations


def _cut_short_by(history: Sequence[Event], deadline_ms: int, policies: RetryPolicies) -> bool | None:
    """Whether the deadline cut the saga's forward part short; None where its history cannot tell.

    Judged from the run that decided to stop going forward: its commit of
    FAILED or COMPENSATING, on its own clock (the one it checked the
    deadline on), and the debits and credits it logged at its epoch.
    """
    decision = next((event for event in history if event.kind == "state" and event.state in _STOPS_FORWARD), None)
    if decision is None or decision.epoch is None:
        return None
    if decision.at_ms < deadline_ms:
        return False
    forward = [
        event.attempt
        for event in history
        if event.attempt is not None and event.epoch == decision.epoch and event.attempt.step in (DEBIT, CREDIT)
    ]
    if not forward:
        # That run sent nothing forward: the deadline stopped it, unless it was
        # a resumed run that found a compensation on record first (outcome_unknown).
        return True if decision.epoch <= 1 else None
    last = forward[-1]
    if last.step == DEBIT and last.status == 200:
        return True  # the credit never went out
    policy = policies.debit if last.step == DEBIT else policies.credit
    return _unanswered(last) and policy.allows(last.number + 1)


_STOPS_FORWARD = frozenset({SagaState.FAILED, SagaState.COMPENSATING})
#: The ends a saga's own runs reach, rather than an operator or a quarantine.
_AUTOMATIC_ENDS = frozenset({SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED})


def _unanswered(attempt: Attempt) -> bool:
    """An attempt the saga would retry: no answer, or one that says nothing (5xx, 429)."""
    return attempt.status is None or attempt.status >= 500 or attempt.status == 429


def check_operator_ends(
    records: Sequence[SagaRecord], histories: Mapping[str, Sequence[Event]], sent: Sequence[SentRequest]
) -> list[verify.Violation]:
    """What an operator's ends promise (saga/operator.py).

    A cancel and a claim never both land on one saga (the epoch rule lets
    exactly one win); a CANCELLED saga never had a request at any service;
    a RESOLVED one was NEEDS_ATTENTION before.
    """
    requests = _requests_by_saga(sent)
    violations: list[verify.Violation] = []
    for record in records:
        tid = record.transaction_id
        history = histories.get(tid, [])
        cancelled = [
            event
            for event in history
            if event.action is not None
            and event.action.kind is ActionKind.CANCEL
            and event.state is SagaState.CANCELLED
        ]
        claimed = [event for event in history if event.kind == "claim"]
        if cancelled and (claimed or record.epoch > 0):
            violations.append(
                verify.Violation(
                    "a cancel and a claim never both win",
                    f"{tid} was cancelled and claimed (epoch {record.epoch}, {len(claimed)} claims)",
                    (tid,),
                )
            )
        if record.state is SagaState.CANCELLED and requests.get(tid):
            first = requests[tid][0]
            violations.append(
                verify.Violation(
                    "a cancelled saga sent nothing",
                    f"{tid} is CANCELLED, yet {len(requests[tid])} of its requests reached the network "
                    f"(first: {first.step} to {first.host} at {first.at_ms}ms)",
                    (tid,),
                )
            )
        if record.state is SagaState.RESOLVED:
            states = [event.state for event in history if event.state is not None]
            if SagaState.NEEDS_ATTENTION not in states[:-1]:
                violations.append(
                    verify.Violation("only NEEDS_ATTENTION is resolved", f"{tid} was never NEEDS_ATTENTION", (tid,))
                )
    return violations
