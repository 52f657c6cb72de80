"""Where a ledger keeps its money: one store per database, behind one small interface.

Every store runs each ledger operation as one unit of work: read the account
and the entries already recorded under the transaction id, decide with
:func:`server.ledger.decide` (or, for PostgreSQL, the same rules in SQL), write
the entry and the new balance, commit, and only then answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from server.ledger import MAX_BALANCE, Account, Entry, Operation, valid_balance
from server.openings import Opening, OpeningRequest
from server.shared.database_url import DatabaseUrl


class StoreError(Exception):
    """A store cannot be opened: the message is one line, fit for an operator."""


class StorageUnavailable(Exception):
    """The database failed during an operation; nothing was half applied, but the outcome may be unknown."""


#: What a store returns for one request: the entry, and whether it was a replay.
Execution = tuple[Entry, bool]
#: The execution (None when it was not applied), and the ledger's position read after its write.
PositionedExecution = tuple[Execution | None, int]


def check_opening(accounts: Mapping[str, int], max_balance: int) -> None:
    """Raise StoreError unless the balance limit and every opening balance fit the schemas' bounds."""
    if not 0 <= max_balance <= MAX_BALANCE:
        raise StoreError(f"max_balance must be from 0 to {MAX_BALANCE}, the limit the schema enforces")
    for user_id, balance in accounts.items():
        if not valid_balance(balance, max_balance):
            raise StoreError(f"balance of {user_id!r} must be an integer from 0 to {max_balance}")


def new_ledger_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> str:
    """Now, as ISO 8601 UTC with milliseconds: how every store stamps an audit record."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LedgerStore(Protocol):
    #: Made when the store is created and kept as long as the store: a
    #: different id means a different ledger, one that remembers nothing of the old.
    ledger_id: str

    async def execute(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> Execution | None:
        """Replay the recorded answer, or decide and record a new request.

        With ``apply_new`` false a new request is neither decided nor
        recorded, and None comes back: the caller refuses it. Raises
        IdempotencyKeyReused for the same id and operation with another body,
        and StorageUnavailable when the database fails.
        """

    async def execute_with_position(
        self, operation: Operation, transaction_id: str, user_id: str, amount: int, *, apply_new: bool = True
    ) -> PositionedExecution:
        """:meth:`execute`, and the ledger's position read after the request's write, in the same unit of work.

        Reading it after the write makes the answer at least every position
        any process on this store answered before the request arrived.
        """

    async def open_account(self, request: OpeningRequest) -> tuple[Opening, bool]:
        """Open an account with money brought in, or replay the answer recorded under the transaction id.

        Returns (opening, replayed). The account, its opening balance and the
        audit record are written in one unit of work. Raises OpeningKeyReused
        for the same id with another user or balance, and StorageUnavailable
        when the database fails.
        """

    async def opening(self, transaction_id: str) -> Opening | None:
        """The opening recorded under ``transaction_id``, if any: part of its audit trail."""

    async def position(self) -> int:
        """The ledger's position: how far its record has come, 0 before the first entry.

        It grows with every recorded entry and never goes back, except when
        the record itself does: a restore of an older backup answers the older
        number. A client that sees it lower than before has found a ledger
        that went back in time.
        """

    async def balance(self, user_id: str) -> int | None: ...

    async def accounts(self) -> list[Account]: ...

    async def trail(self, transaction_id: str) -> list[Entry]:
        """Every entry recorded under ``transaction_id``, in the order recorded."""

    # The reads with the position read in the same query, after the request arrived.

    async def balance_with_position(self, user_id: str) -> tuple[int | None, int]: ...

    async def accounts_with_position(self) -> tuple[list[Account], int]: ...

    async def trail_with_position(self, transaction_id: str) -> tuple[list[Entry], int]: ...

    async def close(self) -> None: ...

    async def check_invariants(self) -> None:
        """Raise InvariantViolation unless the balances agree with the record of every entry."""


async def open_store(url: DatabaseUrl, accounts: Mapping[str, int], *, max_balance: int = MAX_BALANCE) -> LedgerStore:
    """Open (creating or migrating where needed) the store ``url`` names.

    The accounts in ``accounts`` are opened only where they do not exist yet,
    so a restart never resets a balance. Raises StoreError with a one-line reason.
    """
    if url.kind == "memory":
        from server.stores.memory import MemoryStore

        return MemoryStore.create(accounts, max_balance=max_balance)
    if url.kind == "sqlite":
        from server.stores.sqlite import SqliteStore

        assert url.path is not None
        return await SqliteStore.open(url.path, accounts, max_balance=max_balance)
    from server.stores.postgres import PostgresStore

    assert url.dsn is not None
    return await PostgresStore.open(url.dsn, accounts, max_balance=max_balance)
