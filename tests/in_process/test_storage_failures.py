"""Which errors of each database are storage failures (503 storage_unavailable) and which are bugs (500).

A storage failure is answered 503 with Retry-After and one log line; an error
that is not one is an unexpected error, answered 500 and logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from server import Settings, create_app
from server.stores import StorageUnavailable
from server.stores import postgres as postgres_store
from server.stores import sqlite as sqlite_store
from server.stores.memory import MemoryStore
from tests.support.inprocess import ledger_call


def sqlite_error(kind: type[sqlite3.Error], message: str, code: int | None) -> sqlite3.Error:
    error = kind(message)
    if code is not None:
        error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (sqlite_error(sqlite3.OperationalError, "disk I/O error", sqlite3.SQLITE_IOERR_WRITE), True),
        (sqlite_error(sqlite3.OperationalError, "database or disk is full", sqlite3.SQLITE_FULL), True),
        (sqlite_error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY), True),
        (sqlite_error(sqlite3.OperationalError, "unable to open database file", sqlite3.SQLITE_CANTOPEN), True),
        (sqlite_error(sqlite3.OperationalError, "attempt to write a readonly database", sqlite3.SQLITE_READONLY), True),
        (sqlite_error(sqlite3.DatabaseError, "file is not a database", sqlite3.SQLITE_NOTADB), True),
        (sqlite_error(sqlite3.OperationalError, "disk I/O error", None), True),
        (sqlite_error(sqlite3.OperationalError, "no such table: entries", sqlite3.SQLITE_ERROR), False),
        (sqlite_error(sqlite3.IntegrityError, "CHECK constraint failed", sqlite3.SQLITE_CONSTRAINT_CHECK), False),
        (RuntimeError("a bug"), False),
    ],
    ids=lambda value: str(value) if not isinstance(value, bool) else "",
)
def test_sqlite_storage_failures_are_what_the_file_the_disk_or_a_lock_did(error: Exception, failure: bool) -> None:
    assert sqlite_store.is_storage_failure(error) is failure


def test_sqlite_errors_from_sqlite_itself_carry_the_code_the_classification_reads(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "no such folder" / "ledger.db")
    assert sqlite_store.is_storage_failure(cannot_open.value)
    (tmp_path / "junk.db").write_bytes(b"not a database, but long enough to be read as one's header" * 10)
    with pytest.raises(sqlite3.DatabaseError) as not_a_database:
        sqlite3.connect(tmp_path / "junk.db").execute("SELECT * FROM entries")
    assert sqlite_store.is_storage_failure(not_a_database.value)
    with pytest.raises(sqlite3.OperationalError) as no_table:
        sqlite3.connect(":memory:").execute("SELECT * FROM entries")
    assert not sqlite_store.is_storage_failure(no_table.value)


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.exceptions.DiskFullError("could not extend file"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), True),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"), True),
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), True),
        (asyncpg.InterfaceError("connection is closed"), True),
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"), True),
        (ConnectionResetError("Connection reset by peer"), True),
        (OSError("Connection refused"), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"), False),
        (asyncpg.exceptions.CheckViolationError("new row violates check constraint"), False),
        (asyncpg.exceptions.UndefinedFunctionError("function ledger_execute does not exist"), False),
        (asyncpg.exceptions.RaiseError("unknown operation"), False),
        (RuntimeError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else "",
)
def test_postgres_storage_failures_are_the_connections_and_a_database_that_cannot_serve_now(
    error: Exception, failure: bool
) -> None:
    assert postgres_store.is_storage_failure(error) is failure


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.InterfaceError("cannot perform operation: another operation is in progress"), True),
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"), True),
        (ConnectionResetError("Connection reset by peer"), True),
        # The server survives these, and asyncpg keeps the connection after cancelling a timed-out statement.
        (TimeoutError(), False),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), False),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), False),
        (asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else "",
)
def test_only_a_lost_postgres_connection_is_ended_and_its_pool_renewed(error: Exception, lost: bool) -> None:
    assert postgres_store._connection_lost(error) is lost


class FailingStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__(MemoryStore.create({"alice": 1_000}).ledger)
        self.error = error

    async def execute_with_position(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def answer(store: MemoryStore) -> httpx.Response:
    async def call() -> httpx.Response:
        app = create_app(Settings(accounts={"alice": 1_000}, log_requests=False), store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as client:
            return await client.post("/debit", **ledger_call("t1"))

    return asyncio.run(call())


def test_a_storage_failure_is_503_with_retry_after_and_one_log_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="server"):
        response = answer(FailingStore(StorageUnavailable("debit: AdminShutdownError: terminating connection")))
    assert (response.status_code, response.json()["code"], response.headers["retry-after"]) == (
        503,
        "storage_unavailable",
        "1",
    )
    lines = [record for record in caplog.records if record.name == "server"]
    assert [record.levelname for record in lines] == ["WARNING"]
    assert "AdminShutdownError" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_an_error_that_is_no_storage_failure_is_500_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="server"):
        response = answer(FailingStore(sqlite3.IntegrityError("CHECK constraint failed")))
    assert (response.status_code, response.json()["code"]) == (500, "internal_error")
    assert "retry-after" not in response.headers
    (line,) = [record for record in caplog.records if record.name == "server"]
    assert line.exc_info is not None
