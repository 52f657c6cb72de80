"""The invariants a finished run must leave true, judged from the ledgers themselves.

The simulator reads each service's :class:`~server.ledger.Ledger` directly
(it runs in the same process), and judges with :mod:`saga.verify` where the
check is the one every other harness uses: money conserved, no negative
balance, every saga terminal, balances exactly as the completed sagas say,
and audit trails agreeing with each saga's end state. On top of those it
checks what only a ledger's insides show: no (transaction_id, operation)
moved money twice, and each ledger's own self-check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from saga import verify
from saga.records import Event, SagaRecord
from saga.simulation.workload import service_url
from server.ledger import Entry, InvariantViolation, Ledger, Operation


def saga_ends(records: Sequence[SagaRecord]) -> list[verify.SagaEnd]:
    return [
        verify.SagaEnd(record.transaction_id, record.state, record.source, record.target, record.amount)
        for record in records
    ]


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
    violations = verify.check(opening, balances_of(ledgers), sagas, audit_trails(ledgers, sagas), exclusive=True)
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
            if event.epoch is None:
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
