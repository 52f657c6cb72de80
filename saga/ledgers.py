"""Ledgers that went back in time: each service's ledger position, the highest the log has seen, and quarantine.

Every answer of an accounts service names its ledger (``Ledger-Id``) and that
ledger's position (``Ledger-Position``), a count of recorded entries that
only grows. A restore from an older backup, a disk snapshot rolled back or a
lost WAL file all take a ledger back in time: it forgets entries, and with
them the money that sagas moved there since. Its id lives in the restored
data, so the id alone does not show it; its position does, as soon as it
answers with less than the log has already seen from it.

A service whose ledger went back is quarantined: nothing more is sent to it
until an operator has compared the ledger with the sagas (``python -m saga
reconcile``) and recorded a decision (``reconcile --accept``). Each accepted
decision starts a new generation of the service's mark, so that marks from
before it no longer count.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LedgerMark:
    """The highest position the log has seen from one service's ledger."""

    service: str
    #: None right after an accepted decision: the next answer names the ledger anew.
    ledger_id: str | None
    position: int
    generation: int = 0

    def raised_to(self, ledger_id: str, position: int) -> LedgerMark:
        """This mark after an answer that did not go back (see :func:`went_back`)."""
        return LedgerMark(self.service, ledger_id, max(self.position, position), self.generation)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A service nothing is sent to, because its ledger went back in time, until an operator accepts it."""

    service: str
    reason: str
    at_ms: int
    #: The saga whose answer showed it, if a saga did.
    transaction_id: str | None = None

    def __str__(self) -> str:
        return f"{self.service} is quarantined: {self.reason}"


@dataclass(frozen=True, slots=True)
class Acceptance:
    """An operator's recorded decision to trust a quarantined service's ledger as it is now."""

    service: str
    reason: str
    at_ms: int
    #: Why the service had been quarantined.
    quarantined_because: str


def went_back(mark: LedgerMark | None, ledger_id: str, position: int) -> str | None:
    """Why an answer from ``ledger_id`` at ``position`` shows that the service forgot what it did, or None.

    ``mark`` must be what the log held before the request was sent: the
    service read its position after the request arrived, so an honest ledger
    answers at least that much, however many sagas raced it.
    """
    if mark is None or mark.ledger_id is None:
        return None
    if ledger_id != mark.ledger_id:
        return (
            f"its ledger was replaced: {mark.ledger_id} had answered at position {mark.position}, "
            f"now {ledger_id} answers at {position}"
        )
    if position < mark.position:
        return (
            f"its ledger {ledger_id} went back from position {mark.position} to {position} "
            f"({mark.position - position} entries forgotten): restored from an older copy, or it lost writes"
        )
    return None


class LedgerUntrusted(Exception):
    """What a service says of a saga can no longer be trusted: the saga stops and waits for an operator."""

    def __init__(self, service: str, message: str) -> None:
        self.service = service
        super().__init__(message)


class LedgerWentBack(LedgerUntrusted):
    """A service answered from a ledger that went back in time, or was replaced: it is quarantined now."""

    def __init__(self, service: str, reason: str, transaction_id: str | None = None) -> None:
        subject = f"saga {transaction_id}: " if transaction_id else ""
        super().__init__(
            service, f"{subject}the service {service} has forgotten what it did: {reason}; {_UNTIL_ACCEPTED}"
        )


class ServiceQuarantined(LedgerUntrusted):
    """A saga met a service that is quarantined: nothing is sent to it."""

    def __init__(self, quarantine: Quarantine, transaction_id: str | None = None) -> None:
        subject = f"saga {transaction_id}: " if transaction_id else ""
        super().__init__(quarantine.service, f"{subject}{quarantine}; {_UNTIL_ACCEPTED}")


_UNTIL_ACCEPTED = (
    "nothing is sent to it until an operator compares its ledger with the sagas (python -m saga reconcile) "
    "and records a decision (python -m saga reconcile --accept SERVICE --reason TEXT)"
)
