"""The accounts ledger: balances, and a record of every processed transaction.

This is the domain core of the accounts service. It knows nothing of HTTP.
Every balance change is keyed by ``(transaction_id, operation)`` and happens
at most once; every final answer, business rejections included, is recorded
so that a retry or a late duplicate gets exactly the same answer.

Nothing here awaits. The web adapter calls :meth:`Ledger.recorded` and
:meth:`Ledger.apply` back to back on the event loop, so the check and the
write of one request can never interleave with another request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Operation = Literal["debit", "credit", "compensate_debit", "compensate_credit"]
Outcome = Literal["applied", "reversed", "voided"]
RejectionCode = Literal[
    "unknown_user",
    "insufficient_funds",
    "balance_limit_exceeded",
    "transaction_compensated",
    "transfer_completed",
]

DEBIT: Final = "debit"
CREDIT: Final = "credit"
COMPENSATE_DEBIT: Final = "compensate_debit"
COMPENSATE_CREDIT: Final = "compensate_credit"
OPERATIONS: Final[tuple[Operation, ...]] = (DEBIT, CREDIT, COMPENSATE_DEBIT, COMPENSATE_CREDIT)

#: The largest balance a credit may produce: the largest integer a JSON
#: consumer that parses numbers as IEEE doubles still represents exactly.
MAX_BALANCE: Final = 2**53 - 1
MAX_AMOUNT: Final = 10**12

_REJECTION_STATUS: Final[Mapping[str, int]] = {
    "unknown_user": 404,
    "insufficient_funds": 409,
    "balance_limit_exceeded": 409,
    "transaction_compensated": 409,
    "transfer_completed": 409,
}


class IdempotencyKeyReused(Exception):
    """The transaction id was already used for this operation with another body."""

    def __init__(self, transaction_id: str, operation: Operation, recorded: Entry) -> None:
        self.transaction_id = transaction_id
        self.operation = operation
        self.recorded = recorded
        super().__init__(
            f"transaction_id {transaction_id!r} was already used for {operation} "
            f"with user_id {recorded.user_id!r} and amount {recorded.amount}"
        )


class InvariantViolation(AssertionError):
    """The ledger's state contradicts its own journal."""


class Entry:
    """What the ledger did, once and for all, with one (transaction_id, operation).

    Either ``outcome`` and ``balance`` are set (the operation took effect, or
    fenced the id), or ``rejection`` is (a final business rejection).
    """

    # A ledger holds one of these per processed request, so it is kept small.
    __slots__ = ("amount", "balance", "operation", "outcome", "rejection", "sequence", "transaction_id", "user_id")

    def __init__(
        self,
        transaction_id: str,
        operation: Operation,
        user_id: str,
        amount: int,
        sequence: int,
        *,
        outcome: Outcome | None = None,
        balance: int | None = None,
        rejection: RejectionCode | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.operation = operation
        self.user_id = user_id
        self.amount = amount
        self.outcome = outcome
        self.balance = balance
        self.rejection = rejection
        self.sequence = sequence

    @property
    def status(self) -> int:
        return 200 if self.rejection is None else _REJECTION_STATUS[self.rejection]

    @property
    def took_effect(self) -> bool:
        """True when this entry moved money: an applied or reversed operation."""
        return self.outcome == "applied" or self.outcome == "reversed"

    @property
    def delta(self) -> int:
        """The change this entry made to its user's balance."""
        if not self.took_effect:
            return 0
        adds = self.operation == CREDIT or self.operation == COMPENSATE_DEBIT
        return self.amount if adds else -self.amount

    def matches(self, user_id: str, amount: int) -> bool:
        return self.user_id == user_id and self.amount == amount

    def __repr__(self) -> str:
        result = self.rejection or f"{self.outcome} balance={self.balance}"
        return f"Entry({self.operation} {self.transaction_id} {self.user_id} {self.amount}: {result})"


@dataclass(frozen=True, slots=True)
class Account:
    user_id: str
    balance: int


class Ledger:
    """In-memory balances with exactly-once, fenced ledger operations."""

    def __init__(self, balances: Mapping[str, int], *, max_balance: int = MAX_BALANCE) -> None:
        for user_id, balance in balances.items():
            if type(balance) is not int or not 0 <= balance <= max_balance:
                raise ValueError(f"balance of {user_id!r} must be an integer from 0 to {max_balance}")
        self._balances: dict[str, int] = dict(balances)
        self._initial: dict[str, int] = dict(balances)
        self._max_balance = max_balance
        self._entries: dict[tuple[str, Operation], Entry] = {}
        #: Entries that moved money, in order: the ledger's journal.
        self._journal: list[Entry] = []

    # -- reads -----------------------------------------------------------------

    def balance(self, user_id: str) -> int | None:
        return self._balances.get(user_id)

    def accounts(self) -> list[Account]:
        return [Account(user_id, self._balances[user_id]) for user_id in sorted(self._balances)]

    def total(self) -> int:
        return sum(self._balances.values())

    def trail(self, transaction_id: str) -> list[Entry]:
        """Every entry recorded under ``transaction_id``, in the order recorded."""
        found = [self._entries.get((transaction_id, operation)) for operation in OPERATIONS]
        return sorted((entry for entry in found if entry is not None), key=lambda entry: entry.sequence)

    def journal(self) -> Iterator[Entry]:
        return iter(self._journal)

    def __len__(self) -> int:
        """The number of recorded (transaction_id, operation) pairs."""
        return len(self._entries)

    # -- writes ----------------------------------------------------------------

    def recorded(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> Entry | None:
        """The entry to replay for this request, or None if it is new.

        Raises IdempotencyKeyReused if the id was used for this operation with
        another body.
        """
        entry = self._entries.get((transaction_id, operation))
        if entry is not None and not entry.matches(user_id, amount):
            raise IdempotencyKeyReused(transaction_id, operation, entry)
        return entry

    def execute(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> tuple[Entry, bool]:
        """Replay the recorded answer, or apply the request: (entry, replayed)."""
        entry = self.recorded(operation, transaction_id, user_id, amount)
        if entry is not None:
            return entry, True
        return self.apply(operation, transaction_id, user_id, amount), False

    def apply(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> Entry:
        """Decide a new request and record the decision.

        The caller has checked :meth:`recorded` first, with no await between.
        """
        key = (transaction_id, operation)
        if key in self._entries:
            raise InvariantViolation(f"{operation} {transaction_id} is already recorded")
        if operation == DEBIT:
            entry = self._debit(transaction_id, user_id, amount)
        elif operation == CREDIT:
            entry = self._credit(transaction_id, user_id, amount)
        elif operation == COMPENSATE_DEBIT:
            entry = self._compensate_debit(transaction_id, user_id, amount)
        elif operation == COMPENSATE_CREDIT:
            entry = self._compensate_credit(transaction_id, user_id, amount)
        else:
            raise ValueError(f"unknown operation {operation!r}")
        self._entries[key] = entry
        if entry.took_effect:
            self._journal.append(entry)
        return entry

    # -- the rules -------------------------------------------------------------

    def _debit(self, transaction_id: str, user_id: str, amount: int) -> Entry:
        balance = self._balances.get(user_id)
        if balance is None:
            return self._reject(DEBIT, transaction_id, user_id, amount, "unknown_user")
        if (transaction_id, COMPENSATE_DEBIT) in self._entries:
            # A debit that arrives after its own compensation must never land.
            return self._reject(DEBIT, transaction_id, user_id, amount, "transaction_compensated")
        if balance < amount:
            return self._reject(DEBIT, transaction_id, user_id, amount, "insufficient_funds")
        return self._move(DEBIT, transaction_id, user_id, amount, balance - amount, "applied")

    def _credit(self, transaction_id: str, user_id: str, amount: int) -> Entry:
        balance = self._balances.get(user_id)
        if balance is None:
            return self._reject(CREDIT, transaction_id, user_id, amount, "unknown_user")
        if (transaction_id, COMPENSATE_CREDIT) in self._entries:
            return self._reject(CREDIT, transaction_id, user_id, amount, "transaction_compensated")
        if balance + amount > self._max_balance:
            return self._reject(CREDIT, transaction_id, user_id, amount, "balance_limit_exceeded")
        return self._move(CREDIT, transaction_id, user_id, amount, balance + amount, "applied")

    def _compensate_debit(self, transaction_id: str, user_id: str, amount: int) -> Entry:
        debit = self._undoable(DEBIT, COMPENSATE_DEBIT, transaction_id, user_id, amount)
        balance = self._balances.get(user_id)
        if balance is None:
            return self._reject(COMPENSATE_DEBIT, transaction_id, user_id, amount, "unknown_user")
        if self._credit_stands(transaction_id):
            # The money already reached its target here: undoing the debit
            # alone would create money.
            return self._reject(COMPENSATE_DEBIT, transaction_id, user_id, amount, "transfer_completed")
        if debit is None:
            return self._void(COMPENSATE_DEBIT, transaction_id, user_id, amount, balance)
        # The amount comes from the recorded debit, never from the request:
        # compensation gives back exactly what was taken.
        return self._move(COMPENSATE_DEBIT, transaction_id, user_id, debit.amount, balance + debit.amount, "reversed")

    def _compensate_credit(self, transaction_id: str, user_id: str, amount: int) -> Entry:
        credit = self._undoable(CREDIT, COMPENSATE_CREDIT, transaction_id, user_id, amount)
        balance = self._balances.get(user_id)
        if balance is None:
            return self._reject(COMPENSATE_CREDIT, transaction_id, user_id, amount, "unknown_user")
        if credit is None:
            return self._void(COMPENSATE_CREDIT, transaction_id, user_id, amount, balance)
        if balance < credit.amount:
            # The credited money has been spent: the credit stands.
            return self._reject(COMPENSATE_CREDIT, transaction_id, user_id, amount, "insufficient_funds")
        return self._move(
            COMPENSATE_CREDIT, transaction_id, user_id, credit.amount, balance - credit.amount, "reversed"
        )

    def _undoable(
        self, forward: Operation, compensation: Operation, transaction_id: str, user_id: str, amount: int
    ) -> Entry | None:
        """The applied forward entry a compensation would reverse, if any."""
        entry = self._entries.get((transaction_id, forward))
        if entry is None or entry.outcome != "applied":
            return None
        if not entry.matches(user_id, amount):
            raise IdempotencyKeyReused(transaction_id, compensation, entry)
        return entry

    def _credit_stands(self, transaction_id: str) -> bool:
        credit = self._entries.get((transaction_id, CREDIT))
        if credit is None or credit.outcome != "applied":
            return False
        undo = self._entries.get((transaction_id, COMPENSATE_CREDIT))
        return undo is None or undo.outcome != "reversed"

    def _move(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, new_balance: int, outcome: Outcome
    ) -> Entry:
        self._balances[user_id] = new_balance
        return Entry(
            transaction_id, operation, user_id, amount, len(self._entries), outcome=outcome, balance=new_balance
        )

    def _void(self, operation: Operation, transaction_id: str, user_id: str, amount: int, balance: int) -> Entry:
        return Entry(transaction_id, operation, user_id, amount, len(self._entries), outcome="voided", balance=balance)

    def _reject(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, code: RejectionCode
    ) -> Entry:
        return Entry(transaction_id, operation, user_id, amount, len(self._entries), rejection=code)

    # -- self-checks -----------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise InvariantViolation unless the balances agree with the journal.

        Every balance must be non-negative and equal to its initial value plus
        the journal's changes; no (transaction_id, operation) may have moved
        money twice; every reversal must follow the operation it reverses.
        """
        expected = dict(self._initial)
        seen: set[tuple[str, Operation]] = set()
        for entry in self._journal:
            key = (entry.transaction_id, entry.operation)
            if key in seen:
                raise InvariantViolation(f"{entry.operation} {entry.transaction_id} moved money twice")
            seen.add(key)
            if entry.outcome == "reversed":
                forward: Operation = DEBIT if entry.operation == COMPENSATE_DEBIT else CREDIT
                if (entry.transaction_id, forward) not in seen:
                    raise InvariantViolation(f"{entry!r} reverses nothing")
            expected[entry.user_id] = expected.get(entry.user_id, 0) + entry.delta
        for user_id, balance in self._balances.items():
            if balance < 0:
                raise InvariantViolation(f"balance of {user_id!r} is negative: {balance}")
            if balance != expected.get(user_id):
                raise InvariantViolation(
                    f"balance of {user_id!r} is {balance}, but the journal says {expected.get(user_id)}"
                )
