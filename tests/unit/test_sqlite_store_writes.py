"""The SQLite store's writer: what one group commit answers when the database fails under it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from server.ledger import CREDIT, DEBIT
from server.stores import StorageUnavailable
from server.stores.sqlite import SqliteStore, _Request, _write_group


class FailingOn:
    """A connection that fails every statement starting with one of ``failing``, as a full disk would."""

    def __init__(self, connection: sqlite3.Connection, *failing: str) -> None:
        self.connection = connection
        self.failing = failing

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        if sql.startswith(self.failing):
            raise sqlite3.OperationalError(f"disk I/O error on {sql.split()[0]}")
        return self.connection.execute(sql, parameters)


def open_file(path: Path) -> sqlite3.Connection:
    async def create() -> None:
        store = await SqliteStore.open(path, {"alice": 1_000})
        await store.close()

    asyncio.run(create())
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def balances(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as connection:
        return dict(connection.execute("SELECT user_id, balance FROM accounts").fetchall())


REQUESTS = [_Request(DEBIT, "t1", "alice", 100, True), _Request(CREDIT, "t2", "alice", 5, True)]


def test_a_failed_commit_whose_rollback_fails_too_answers_every_request_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    connection = open_file(path)
    outcomes = _write_group(FailingOn(connection, "COMMIT", "ROLLBACK"), REQUESTS, 2**53 - 1, path)  # type: ignore[arg-type]
    assert [type(outcome) for outcome in outcomes] == [StorageUnavailable, StorageUnavailable]
    assert str(outcomes[0]) == f"the SQLite database {path} failed: disk I/O error on COMMIT"
    connection.close()
    assert balances(path) == {"alice": 1_000}


def test_a_request_whose_statement_fails_is_unavailable_alone_and_the_others_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    connection = open_file(path)
    failing_update = FailingOn(connection, "UPDATE")
    outcomes = _write_group(failing_update, REQUESTS[:1], 2**53 - 1, path)  # type: ignore[arg-type]
    assert [type(outcome) for outcome in outcomes] == [StorageUnavailable]
    assert str(outcomes[0]) == f"the SQLite database {path} failed: disk I/O error on UPDATE"
    (credited,) = _write_group(connection, REQUESTS[1:], 2**53 - 1, path)
    assert not isinstance(credited, Exception)
    assert credited is not None
    assert (credited[0].outcome, credited[0].balance, credited[1]) == ("applied", 1_005, False)
    connection.close()
    assert balances(path) == {"alice": 1_005}
