"""The SQLite store's writer: what one group commit answers when the database fails under it."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.ledger import CREDIT, DEBIT
from server.stores import StorageUnavailable, StoreError
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
    execution, position = credited
    assert execution is not None
    assert (execution[0].outcome, execution[0].balance, execution[1]) == ("applied", 1_005, False)
    # The failed request's entry was rolled back with it: the credit's is the first.
    assert position == 1
    connection.close()
    assert balances(path) == {"alice": 1_005}


def test_a_schema_newer_than_the_code_names_the_file_it_is_in(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_file(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version (version, name) VALUES (99, 'from_the_future')")
    with pytest.raises(StoreError, match=rf"^the schema of {re.escape(str(path))} is at version 99, newer than"):
        asyncio.run(SqliteStore.open(path, {"alice": 1_000}))


def test_a_closed_store_says_which_file_it_was(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "ledger.db", {"alice": 1_000})
        await store.close()
        with pytest.raises(StorageUnavailable, match=rf"^the SQLite store {re.escape(str(store.path))} is closed$"):
            await store.execute(DEBIT, "t1", "alice", 100)

    asyncio.run(scenario())


def test_a_locked_file_answers_unavailable_with_the_file_and_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario() -> None:
        store = await SqliteStore.open(path, {"alice": 1_000}, busy_timeout=0.05)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(
                StorageUnavailable, match=rf"^the SQLite database {re.escape(str(path))} failed: .*locked"
            ):
                await store.execute(DEBIT, "t1", "alice", 100)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await store.close()

    asyncio.run(scenario())


def test_a_writer_that_cannot_take_work_answers_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario() -> None:
        store = await SqliteStore.open(path, {"alice": 1_000})
        store._writer.shutdown(wait=True)  # the writer thread is gone, as after an interpreter shutdown began
        with pytest.raises(StorageUnavailable, match=rf"^the SQLite database {re.escape(str(path))} failed: cannot"):
            await store.execute(DEBIT, "t1", "alice", 100)
        assert store.commits == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(("group_commit", "commits"), [(True, 1), (False, 3)])
def test_every_request_is_counted_once_whether_grouped_or_not(tmp_path: Path, group_commit: bool, commits: int) -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        store = await SqliteStore.open(tmp_path / "ledger.db", {"alice": 1_000}, group_commit=group_commit)
        answers = await asyncio.gather(*(store.execute(DEBIT, f"t{n}", "alice", 10) for n in range(3)))
        trail = [entry.sequence for n in range(3) for entry in await store.trail(f"t{n}")]
        assert [answer[0].sequence for answer in answers if answer] == trail
        await store.close()
        return store.commits, store.requests_committed, trail

    done_commits, requests, sequences = asyncio.run(scenario())
    assert (done_commits, requests) == (commits, 3)
    assert sequences == [sequences[0], sequences[0] + 1, sequences[0] + 2]
    assert balances(tmp_path / "ledger.db") == {"alice": 970}
