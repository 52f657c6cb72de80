"""The memory store: the ledger in this process's memory, gone when the process ends.

Nothing in :meth:`MemoryStore.execute` awaits, so on the event loop the check
and the write of one request never interleave with another's.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.ledger import MAX_BALANCE, Account, Entry, Ledger, Operation
from server.openings import Opening, OpeningRequest, decide_opening
from server.stores import Execution, PositionedExecution, new_ledger_id, utc_now


class MemoryStore:
    def __init__(self, ledger: Ledger, ledger_id: str | None = None, *, max_balance: int = MAX_BALANCE) -> None:
        self.ledger = ledger
        #: New with every store: a process that restarts on the memory store is a new ledger.
        self.ledger_id = ledger_id or new_ledger_id()
        self._max_balance = max_balance
        self._openings: dict[str, Opening] = {}

    @classmethod
    def create(cls, accounts: Mapping[str, int], *, max_balance: int = MAX_BALANCE) -> MemoryStore:
        return cls(Ledger(accounts, max_balance=max_balance), max_balance=max_balance)

    async def open_account(self, request: OpeningRequest) -> tuple[Opening, bool]:
        # No await between the read and the write: no other request can open the account in between.
        opening, replayed = decide_opening(
            request,
            account_exists=self.ledger.balance(request.user_id) is not None,
            recorded=self._openings.get(request.transaction_id),
            max_balance=self._max_balance,
            now=utc_now(),
        )
        if not replayed:
            self._openings[request.transaction_id] = opening
            if opening.opened:
                self.ledger.open_account(request.user_id, request.opening_balance)
        return opening, replayed

    async def opening(self, transaction_id: str) -> Opening | None:
        return self._openings.get(transaction_id)

    async def execute(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> Execution | None:
        entry = self.ledger.recorded(operation, transaction_id, user_id, amount)
        if entry is not None:
            return entry, True
        if not apply_new:
            return None
        return self.ledger.apply(operation, transaction_id, user_id, amount), False

    async def balance(self, user_id: str) -> int | None:
        return self.ledger.balance(user_id)

    async def accounts(self) -> list[Account]:
        return self.ledger.accounts()

    async def trail(self, transaction_id: str) -> list[Entry]:
        return self.ledger.trail(transaction_id)

    async def execute_with_position(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> PositionedExecution:
        execution = await self.execute(operation, transaction_id, user_id, amount, apply_new=apply_new)
        return execution, await self.position()

    async def position(self) -> int:
        # Entries are never removed, so their count only grows; a copy of an
        # older ledger (reload() keeps every entry) has fewer.
        return len(self.ledger)

    async def balance_with_position(self, user_id: str) -> tuple[int | None, int]:
        return self.ledger.balance(user_id), len(self.ledger)

    async def accounts_with_position(self) -> tuple[list[Account], int]:
        return self.ledger.accounts(), len(self.ledger)

    async def trail_with_position(self, transaction_id: str) -> tuple[list[Entry], int]:
        return self.ledger.trail(transaction_id), len(self.ledger)

    async def close(self) -> None:
        return None

    async def check_invariants(self) -> None:
        """Raise InvariantViolation unless the balances agree with the journal."""
        self.ledger.check_invariants()

    def reload(self) -> None:
        """Read the ledger back from its record, as a durable store does when its service restarts.

        A real memory store dies with its process; the simulator calls this to
        model a database that outlived a crashed service, so that the restart
        path a database store takes is exercised under its faults.
        """
        self.ledger = self.ledger.reopened()
