"""The accounts ledger: balances, and a record of every processed transaction.

This is the domain core of the accounts service. It knows nothing of HTTP.
Every balance change is keyed by ``(transaction_id, operation)`` and happens
at most once; every final answer, business rejections included, is recorded
so that a retry or a late duplicate gets exactly the same answer. One
rejection is not final, and so not recorded: a reversal of a debit that
would break the balance limit only has to wait for room (see
:data:`UNRECORDED_REJECTIONS`).

The rules are one pure function, :func:`decide`: given an operation, the
request, the account's balance and the entries already recorded under the
transaction id, it returns the entry to record. Every store calls it inside
its own unit of work. :class:`Ledger` is the in-memory state the memory store
keeps; nothing in it awaits, so the check and the write of one request can
never interleave with another request on the event loop.
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
    "reversal_exceeds_balance_limit",
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

_REJECTION_STATUS: Final[Mapping[str, int]] = {
    "unknown_user": 404,
    "insufficient_funds": 409,
    "balance_limit_exceeded": 409,
    "reversal_exceeds_balance_limit": 409,
    "transaction_compensated": 409,
    "transfer_completed": 409,
}

#: Rejections that hold only for now, so no store records them: the request is
#: answered, nothing changes, and a retry is decided afresh. A reversal of a
#: debit refused for want of room must not be replayed once there is room:
#: that would keep the debited money from its owner for ever.
UNRECORDED_REJECTIONS: Final[frozenset[RejectionCode]] = frozenset({"reversal_exceeds_balance_limit"})


class IdempotencyKeyReused(Exception):
    """The transaction id was already used for this operation with another body."""

    def __init__(self, transaction_id: str, operation: Operation, recorded: Entry) -> None:
        self.transaction_id = transaction_id
        self.operation = operation
        self.recorded = recorded
        super().__init__(
            f"transaction_id {transaction_id!r} was already used for {recorded.operation} "
            f"with user_id {recorded.user_id!r} and amount {recorded.amount}"
        )


class InvariantViolation(AssertionError):
    """The ledger's state contradicts its own journal."""


class Entry:
    """What the ledger did, once and for all, with one (transaction_id, operation).

    Either ``outcome`` and ``balance`` are set (the operation took effect, or
    fenced the id), or ``rejection`` is (a business rejection). An entry with a
    rejection of :data:`UNRECORDED_REJECTIONS` is an answer only: no store
    records it, and its ``sequence`` places it nowhere.
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
    def final(self) -> bool:
        """Whether this answer holds for good, so a store records it and replays it.

        False for a rejection of :data:`UNRECORDED_REJECTIONS`, which holds only for now.
        """
        return self.rejection not in UNRECORDED_REJECTIONS

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
    #: The money the account was opened with: brought into the ledger, not moved by a transfer.
    opening_balance: int


def replayed(
    operation: Operation, transaction_id: str, user_id: str, amount: int, recorded: Entry | None
) -> Entry | None:
    """The recorded entry to replay for this request, or None if it is new.

    Raises IdempotencyKeyReused if the id was used for this operation with
    another body.
    """
    if recorded is not None and not recorded.matches(user_id, amount):
        raise IdempotencyKeyReused(transaction_id, operation, recorded)
    return recorded


def decide(
    operation: Operation,
    transaction_id: str,
    user_id: str,
    amount: int,
    *,
    balance: int | None,
    recorded: Mapping[Operation, Entry],
    sequence: int,
    max_balance: int = MAX_BALANCE,
) -> Entry:
    """Decide a new request: the entry to record, with the user's new balance.

    ``balance`` is the user's balance now (None for no such account) and
    ``recorded`` holds the entries already recorded under ``transaction_id``,
    which must not include ``operation`` itself. Nothing is written here: the
    caller records the entry, unless it is not :attr:`Entry.final`, and, when
    it took effect, stores its balance.
    """
    if operation in recorded:
        raise InvariantViolation(f"{operation} {transaction_id} is already recorded")
    request = _Request(operation, transaction_id, user_id, amount, sequence)
    if operation == DEBIT:
        return _debit(request, balance, recorded)
    if operation == CREDIT:
        return _credit(request, balance, recorded, max_balance)
    if operation == COMPENSATE_DEBIT:
        return _compensate_debit(request, balance, recorded, max_balance)
    if operation == COMPENSATE_CREDIT:
        return _compensate_credit(request, balance, recorded)
    raise ValueError(f"unknown operation {operation!r}")


@dataclass(frozen=True, slots=True)
class _Request:
    operation: Operation
    transaction_id: str
    user_id: str
    amount: int
    sequence: int

    def move(self, new_balance: int, outcome: Outcome) -> Entry:
        return Entry(
            self.transaction_id,
            self.operation,
            self.user_id,
            self.amount,
            self.sequence,
            outcome=outcome,
            balance=new_balance,
        )

    def void(self, balance: int) -> Entry:
        return Entry(
            self.transaction_id,
            self.operation,
            self.user_id,
            self.amount,
            self.sequence,
            outcome="voided",
            balance=balance,
        )

    def reject(self, code: RejectionCode) -> Entry:
        return Entry(self.transaction_id, self.operation, self.user_id, self.amount, self.sequence, rejection=code)


# -- the rules -----------------------------------------------------------------


def _debit(request: _Request, balance: int | None, recorded: Mapping[Operation, Entry]) -> Entry:
    if balance is None:
        return request.reject("unknown_user")
    if COMPENSATE_DEBIT in recorded:
        # A debit that arrives after its own compensation must never land.
        return request.reject("transaction_compensated")
    if balance < request.amount:
        return request.reject("insufficient_funds")
    return request.move(balance - request.amount, "applied")


def _credit(request: _Request, balance: int | None, recorded: Mapping[Operation, Entry], max_balance: int) -> Entry:
    if balance is None:
        return request.reject("unknown_user")
    if COMPENSATE_CREDIT in recorded:
        return request.reject("transaction_compensated")
    if balance + request.amount > max_balance:
        return request.reject("balance_limit_exceeded")
    return request.move(balance + request.amount, "applied")


def _compensate_debit(
    request: _Request, balance: int | None, recorded: Mapping[Operation, Entry], max_balance: int
) -> Entry:
    debit = _undoable(request, recorded.get(DEBIT))
    if balance is None:
        return request.reject("unknown_user")
    if debit is None:
        # Nothing was taken here, so nothing is given back; the void keeps a
        # late debit out. A credit standing here is undone by its own
        # compensation, not answered for by this one.
        return request.void(balance)
    if _credit_stands(recorded):
        # The debit and the credit both landed here: undoing the debit alone
        # would create money.
        return request.reject("transfer_completed")
    if balance + request.amount > max_balance:
        # Credits since the debit filled the account: giving the money back
        # now would break the balance limit, so the reversal waits for room.
        # Not recorded: a recorded refusal would be replayed even once there
        # is room, and the debited money would never come back.
        return request.reject("reversal_exceeds_balance_limit")
    # _undoable has matched the request to the recorded debit, amount
    # included: compensation gives back exactly what was taken.
    return request.move(balance + request.amount, "reversed")


def _compensate_credit(request: _Request, balance: int | None, recorded: Mapping[Operation, Entry]) -> Entry:
    credit = _undoable(request, recorded.get(CREDIT))
    if balance is None:
        return request.reject("unknown_user")
    undo_debit = recorded.get(COMPENSATE_DEBIT)
    if undo_debit is not None and undo_debit.rejection == "transfer_completed":
        # This service has said the transfer completed, so the debit stands:
        # reversing the credit now would destroy the money the debit took.
        return request.reject("transfer_completed")
    if credit is None:
        return request.void(balance)
    # _undoable has matched the request to the recorded credit, amount
    # included: compensation takes back exactly what was given.
    if balance < request.amount:
        # The credited money has been spent: the credit stands.
        return request.reject("insufficient_funds")
    return request.move(balance - request.amount, "reversed")


def _undoable(request: _Request, forward: Entry | None) -> Entry | None:
    """The applied forward entry a compensation would reverse, if any."""
    if forward is None or forward.outcome != "applied":
        return None
    if not forward.matches(request.user_id, request.amount):
        raise IdempotencyKeyReused(request.transaction_id, request.operation, forward)
    return forward


def _credit_stands(recorded: Mapping[Operation, Entry]) -> bool:
    credit = recorded.get(CREDIT)
    if credit is None or credit.outcome != "applied":
        return False
    undo = recorded.get(COMPENSATE_CREDIT)
    return undo is None or undo.outcome != "reversed"


def valid_balance(balance: object, max_balance: int = MAX_BALANCE) -> bool:
    """Whether ``balance`` can open an account: a whole number of minor units, from 0 to ``max_balance``."""
    # type(), not isinstance(): True is an int to isinstance, and no balance.
    return type(balance) is int and 0 <= balance <= max_balance


class Ledger:
    """In-memory balances with exactly-once, fenced ledger operations: the memory store's state."""

    def __init__(self, balances: Mapping[str, int], *, max_balance: int = MAX_BALANCE) -> None:
        for user_id, balance in balances.items():
            if not valid_balance(balance, max_balance):
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
        return [
            Account(user_id, self._balances[user_id], self._initial.get(user_id, 0))
            for user_id in sorted(self._balances)
        ]

    def total(self) -> int:
        return sum(self._balances.values())

    def trail(self, transaction_id: str) -> list[Entry]:
        """Every entry recorded under ``transaction_id``, in the order recorded."""
        return sorted(self._recorded_under(transaction_id).values(), key=lambda entry: entry.sequence)

    def journal(self) -> Iterator[Entry]:
        return iter(self._journal)

    def __len__(self) -> int:
        """The number of recorded (transaction_id, operation) pairs."""
        return len(self._entries)

    # -- writes ----------------------------------------------------------------

    def open_account(self, user_id: str, balance: int) -> bool:
        """Open an account with ``balance`` unless it exists; True if it was opened."""
        if user_id in self._balances:
            return False
        if not valid_balance(balance, self._max_balance):
            raise ValueError(f"balance of {user_id!r} must be an integer from 0 to {self._max_balance}")
        self._balances[user_id] = balance
        self._initial[user_id] = balance
        return True

    def recorded(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> Entry | None:
        """The entry to replay for this request, or None if it is new.

        Raises IdempotencyKeyReused if the id was used for this operation with
        another body.
        """
        return replayed(operation, transaction_id, user_id, amount, self._entries.get((transaction_id, operation)))

    def execute(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> tuple[Entry, bool]:
        """Replay the recorded answer, or apply the request: (entry, replayed)."""
        entry = self.recorded(operation, transaction_id, user_id, amount)
        if entry is not None:
            return entry, True
        return self.apply(operation, transaction_id, user_id, amount), False

    def apply(self, operation: Operation, transaction_id: str, user_id: str, amount: int) -> Entry:
        """Decide a new request and record the decision.

        The caller has checked :meth:`recorded` first, with no await between.
        An entry that is not :attr:`Entry.final` is answered and forgotten.
        """
        entry = decide(
            operation,
            transaction_id,
            user_id,
            amount,
            balance=self._balances.get(user_id),
            recorded=self._recorded_under(transaction_id),
            sequence=len(self._entries),
            max_balance=self._max_balance,
        )
        if not entry.final:
            return entry
        self._entries[(transaction_id, operation)] = entry
        if entry.took_effect:
            assert entry.balance is not None
            self._balances[user_id] = entry.balance
            self._journal.append(entry)
        return entry

    def _recorded_under(self, transaction_id: str) -> dict[Operation, Entry]:
        found: dict[Operation, Entry] = {}
        for operation in OPERATIONS:
            entry = self._entries.get((transaction_id, operation))
            if entry is not None:
                found[operation] = entry
        return found

    # -- restarts --------------------------------------------------------------

    def reopened(self) -> Ledger:
        """A new ledger read back from this one's record: the accounts as they stand and every entry.

        This is what a durable store holds when its process comes back after a
        crash. Every entry must come back, not only those that moved money: a
        voided compensation is the fence that refuses a late debit or credit,
        and a rejection is the answer a retry must be given again.
        """
        reopened = Ledger(self._initial, max_balance=self._max_balance)
        reopened._balances = dict(self._balances)
        for entry in sorted(self._entries.values(), key=lambda entry: entry.sequence):
            reopened._entries[(entry.transaction_id, entry.operation)] = entry
            if entry.took_effect:
                reopened._journal.append(entry)
        return reopened

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
