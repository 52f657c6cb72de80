"""The SQLite store against real files: persistence, the database's own constraints, failures, group commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import Settings, create_app
from server.ledger import MAX_BALANCE, Entry, IdempotencyKeyReused, InvariantViolation, Operation
from server.problems import PROBLEM_CONTENT_TYPE
from server.shared.database_url import parse_database_url
from server.stores import StorageUnavailable, StoreError, open_store
from server.stores.sqlite import SCHEMA, SqliteStore
from tests.support.aio import run
from tests.support.inprocess import asgi_client, ledger_call

ACCOUNTS = {"alice": 1_000, "bob": 0}


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection of its own to the store's file, outside the store, in autocommit mode."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        yield connection
    finally:
        connection.close()


def answer(entry: Entry) -> tuple[Any, ...]:
    """Everything a client is told about an entry."""
    return (entry.operation, entry.user_id, entry.amount, entry.status, entry.outcome, entry.balance, entry.rejection)


def entry_of(execution: tuple[Entry, bool] | None) -> Entry:
    assert execution is not None
    return execution[0]


# -- persistence -------------------------------------------------------------------


def test_balances_replays_fences_and_trails_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def first_life() -> dict[str, Entry]:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            answers = {
                "debit": entry_of(await store.execute("debit", "t1", "alice", 300)),
                "credit": entry_of(await store.execute("credit", "t1", "bob", 300)),
                "refused": entry_of(await store.execute("debit", "t2", "bob", 5_000)),
                "unknown": entry_of(await store.execute("credit", "t3", "zed", 10)),
                "fence": entry_of(await store.execute("compensate_credit", "t4", "bob", 50)),
            }
        finally:
            await store.close()
        return answers

    async def second_life(first: dict[str, Entry]) -> None:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            assert {account.user_id: account.balance for account in await store.accounts()} == {
                "alice": 700,
                "bob": 300,
            }
            requests: list[tuple[tuple[Operation, str, str, int], str]] = [
                (("debit", "t1", "alice", 300), "debit"),
                (("credit", "t1", "bob", 300), "credit"),
                (("debit", "t2", "bob", 5_000), "refused"),
                (("credit", "t3", "zed", 10), "unknown"),
                (("compensate_credit", "t4", "bob", 50), "fence"),
            ]
            for (operation, transaction_id, user_id, amount), name in requests:
                execution = await store.execute(operation, transaction_id, user_id, amount)
                assert execution is not None
                entry, replayed = execution
                assert replayed, name
                assert answer(entry) == answer(first[name]), name
            # The fence still holds: a credit arriving after its void is refused.
            late = await store.execute("credit", "t4", "bob", 50)
            assert late is not None
            assert (late[0].rejection, late[1]) == ("transaction_compensated", False)
            assert [answer(entry) for entry in await store.trail("t1")] == [
                answer(first["debit"]),
                answer(first["credit"]),
            ]
            with pytest.raises(IdempotencyKeyReused):
                await store.execute("debit", "t1", "alice", 301)
            assert await store.balance("alice") == 700
            await store.check_invariants()
        finally:
            await store.close()

    first = run(first_life())
    assert (first["debit"].outcome, first["debit"].balance) == ("applied", 700)
    assert first["refused"].rejection == "insufficient_funds"
    assert first["unknown"].rejection == "unknown_user"
    assert first["fence"].outcome == "voided"
    run(second_life(first))


def test_reopening_with_accounts_never_resets_a_balance_and_opens_new_accounts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario() -> dict[str, int]:
        store = await SqliteStore.open(path, ACCOUNTS)
        await store.execute("debit", "t1", "alice", 400)
        await store.close()
        store = await SqliteStore.open(path, {"alice": 1_000, "carol": 250})
        try:
            await store.check_invariants()
            return {account.user_id: account.balance for account in await store.accounts()}
        finally:
            await store.close()

    assert run(scenario()) == {"alice": 600, "bob": 0, "carol": 250}


def test_open_store_opens_sqlite_urls(tmp_path: Path) -> None:
    async def scenario() -> int | None:
        store = await open_store(parse_database_url(f"sqlite:///{tmp_path}/ledger.db"), ACCOUNTS)
        try:
            assert isinstance(store, SqliteStore)
            return await store.balance("alice")
        finally:
            await store.close()

    assert run(scenario()) == 1_000
    assert (tmp_path / "ledger.db").is_file()


def test_two_stores_opening_one_new_file_together_create_it_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario() -> None:
        stores = await asyncio.gather(*(SqliteStore.open(path, ACCOUNTS) for _ in range(4)))
        for store in stores:
            await store.close()

    run(scenario())
    with raw(path) as connection:
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
        openings = connection.execute("SELECT user_id, balance FROM opening_balances ORDER BY user_id").fetchall()
    assert versions == [(migration.version,) for migration in SCHEMA.migrations()]
    assert openings == sorted(ACCOUNTS.items())


def test_a_store_opening_a_new_file_while_another_process_writes_it_waits_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    # Another process is half-way through creating the file: it holds the
    # write lock, and the file is not in WAL mode yet.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE other_process (x)")
    releases = threading.Timer(0.3, other.execute, ("COMMIT",))
    releases.start()
    try:
        store = run(SqliteStore.open(path, ACCOUNTS))
        run(store.close())
    finally:
        releases.join()
        other.close()
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        openings = connection.execute("SELECT user_id, balance FROM opening_balances ORDER BY user_id").fetchall()
    assert openings == sorted(ACCOUNTS.items())


@pytest.mark.parametrize(
    ("accounts", "max_balance", "reason"),
    [
        ({"alice": 1}, MAX_BALANCE + 1, f"max_balance must be from 0 to {MAX_BALANCE}, the limit the schema enforces"),
        ({"alice": -1}, MAX_BALANCE, f"balance of 'alice' must be an integer from 0 to {MAX_BALANCE}"),
        ({"alice": 11}, 10, "balance of 'alice' must be an integer from 0 to 10"),
    ],
)
def test_a_limit_or_opening_balance_the_schema_cannot_hold_is_refused_before_the_file_is_made(
    accounts: dict[str, int], max_balance: int, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    with pytest.raises(StoreError) as refused:
        run(SqliteStore.open(path, accounts, max_balance=max_balance))
    assert str(refused.value) == reason
    assert not path.exists()


def test_a_balance_limit_below_the_schemas_is_the_one_enforced(tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any, int | None]:
        store = await SqliteStore.open(tmp_path / "ledger.db", {"alice": 5}, max_balance=10)
        try:
            over = await store.execute("credit", "t1", "alice", 6)
            up_to = await store.execute("credit", "t2", "alice", 5)
            return over, up_to, await store.balance("alice")
        finally:
            await store.close()

    (over, _), (up_to, _), balance = run(scenario())
    assert (over.status, over.rejection) == (409, "balance_limit_exceeded")
    assert (up_to.outcome, up_to.balance) == ("applied", 10)
    assert balance == 10


def test_two_stores_on_one_file_never_overdraw_and_see_each_others_entries(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def scenario() -> tuple[list[Any], int | None, Any]:
        first, second = (await SqliteStore.open(path, ACCOUNTS), await SqliteStore.open(path, ACCOUNTS))
        try:
            debits = [(first if i % 2 else second).execute("debit", f"t{i}", "alice", 100) for i in range(30)]
            executions = await asyncio.gather(*debits)
            # The other store replays what this one recorded.
            replay = await first.execute("debit", "t0", "alice", 100)
            await second.check_invariants()
            return executions, await first.balance("alice"), replay
        finally:
            await first.close()
            await second.close()

    executions, balance, replay = run(scenario())
    outcomes = sorted(str(entry.outcome or entry.rejection) for entry, _ in executions)
    assert outcomes == ["applied"] * 10 + ["insufficient_funds"] * 20
    assert balance == 0
    assert replay[1] is True


# -- the database's own constraints ------------------------------------------------


def test_the_database_refuses_a_second_entry_for_one_transaction_and_operation(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    run(_apply_one_debit(path))
    with raw(path) as connection, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        connection.execute(
            "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance) "
            "VALUES ('t1', 'debit', 'alice', 100, 'applied', 800)"
        )


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE accounts SET balance = -1 WHERE user_id = 'alice'", "CHECK"),
        (f"UPDATE accounts SET balance = {MAX_BALANCE + 1} WHERE user_id = 'alice'", "CHECK"),
        ("UPDATE accounts SET balance = 12.5 WHERE user_id = 'alice'", "cannot store REAL"),
        ("INSERT INTO accounts (user_id, balance) VALUES ('dave', -5)", "CHECK"),
        (
            "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance) "
            "VALUES ('t2', 'debit', 'alice', 0, 'applied', 900)",
            "CHECK",
        ),
        (
            "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance, rejection) "
            "VALUES ('t2', 'debit', 'alice', 5, 'applied', 900, 'insufficient_funds')",
            "CHECK",
        ),
        (
            "INSERT INTO entries (transaction_id, operation, user_id, amount) VALUES ('t2', 'debit', 'alice', 5)",
            "CHECK",
        ),
        (
            "INSERT INTO entries (transaction_id, operation, user_id, amount, rejection) "
            "VALUES ('t2', 'transfer', 'alice', 5, 'insufficient_funds')",
            "CHECK",
        ),
    ],
)
def test_the_database_refuses_what_the_ledger_never_holds(tmp_path: Path, statement: str, message: str) -> None:
    path = tmp_path / "ledger.db"
    run(_apply_one_debit(path))
    with raw(path) as connection:
        with pytest.raises(sqlite3.IntegrityError, match=message):
            connection.execute(statement)
        assert connection.execute("SELECT balance FROM accounts WHERE user_id = 'alice'").fetchone() == (900,)


async def _apply_one_debit(path: Path) -> None:
    store = await SqliteStore.open(path, ACCOUNTS)
    try:
        await store.execute("debit", "t1", "alice", 100)
    finally:
        await store.close()


def test_the_invariant_check_finds_a_balance_its_entries_do_not_explain(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    run(_apply_one_debit(path))
    with raw(path) as connection:
        connection.execute("UPDATE accounts SET balance = 950 WHERE user_id = 'alice'")

    async def check() -> None:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            await store.check_invariants()
        finally:
            await store.close()

    with pytest.raises(InvariantViolation, match="'alice' is 950, but its opening balance and entries say 900"):
        run(check())


# -- opening -----------------------------------------------------------------------


def test_a_schema_newer_than_the_code_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    run(_apply_one_debit(path))
    newer = len(SCHEMA.migrations()) + 1
    with raw(path) as connection:
        connection.execute("INSERT INTO schema_version (version, name) VALUES (?, 'from_the_future')", (newer,))
    with pytest.raises(StoreError) as refused:
        run(SqliteStore.open(path, ACCOUNTS))
    assert f"at version {newer}, newer than this code's {newer - 1}" in str(refused.value)
    assert "\n" not in str(refused.value)


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages of an SQLite database\n" * 200)
    return path


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (lambda tmp_path: tmp_path / "no-such-folder" / "ledger.db", "does not exist"),
        (lambda tmp_path: tmp_path, "unable to open database file"),
        (_not_a_database, "file is not a database"),
    ],
    ids=["missing folder", "a folder", "not a database"],
)
def test_a_path_that_cannot_be_opened_is_a_one_line_store_error(tmp_path: Path, where: Any, reason: str) -> None:
    path = where(tmp_path)
    with pytest.raises(StoreError) as refused:
        run(SqliteStore.open(path, ACCOUNTS))
    message = str(refused.value)
    assert message.startswith(f"cannot open the SQLite database {path}")
    assert reason in message
    assert "\n" not in message


# -- failures during an operation --------------------------------------------------


def test_a_locked_database_answers_503_storage_unavailable_and_a_retry_applies_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    settings = Settings(accounts=ACCOUNTS, credit_fault_rate=0.0, log_requests=False)

    async def scenario() -> None:
        store = await SqliteStore.open(path, ACCOUNTS, busy_timeout=0.1)
        try:
            async with asgi_client(create_app(settings, store)) as client:
                with raw(path) as other_process:
                    # Another writer holds the file's write lock past the store's busy timeout.
                    other_process.execute("BEGIN IMMEDIATE")
                    refused = await client.post("/debit", **ledger_call("t1", amount=100))
                    other_process.execute("ROLLBACK")
                assert refused.status_code == 503
                assert refused.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["code"] == "storage_unavailable"
                assert refused.json()["transaction_id"] == "t1"
                assert await store.trail("t1") == []
                assert await store.balance("alice") == 1_000

                retried = await client.post("/debit", **ledger_call("t1", amount=100))
                again = await client.post("/debit", **ledger_call("t1", amount=100))
                assert (retried.status_code, retried.json()["balance"]) == (200, 900)
                assert again.json() == retried.json()
                assert again.headers["idempotent-replayed"] == "true"
                assert await store.balance("alice") == 900
                await store.check_invariants()
        finally:
            await store.close()

    run(scenario())


def test_an_operation_the_database_refuses_rolls_back_alone_in_its_group(tmp_path: Path) -> None:
    # The store decides a credit to carol that the database then refuses (a
    # trigger stands for any constraint), midway between the entry and the balance.
    # A refusal is no storage failure: retried, it would be refused again.
    path = tmp_path / "ledger.db"
    run(run(SqliteStore.open(path, {**ACCOUNTS, "carol": 0})).close())
    with raw(path) as connection:
        connection.execute(
            "CREATE TRIGGER carol_is_frozen BEFORE UPDATE ON accounts WHEN NEW.user_id = 'carol' "
            "BEGIN SELECT RAISE(ABORT, 'carol is frozen'); END"
        )

    async def scenario() -> list[Any]:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            outcomes = await asyncio.gather(
                store.execute("debit", "t1", "alice", 100),
                store.execute("credit", "t2", "carol", 100),
                store.execute("credit", "t3", "bob", 100),
                return_exceptions=True,
            )
            assert (store.commits, store.requests_committed) == (1, 3)
            assert await store.trail("t2") == []
            assert await store.balance("carol") == 0
            await store.check_invariants()
            return list(outcomes)
        finally:
            await store.close()

    debit, refused, credit = run(scenario())
    assert isinstance(refused, sqlite3.IntegrityError)
    assert "carol is frozen" in str(refused)
    assert debit[0].balance == 900
    assert credit[0].balance == 100


def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path / "ledger.db", ACCOUNTS)
        await store.close()
        with pytest.raises(StorageUnavailable):
            await store.execute("debit", "t1", "alice", 100)
        with pytest.raises(StorageUnavailable):
            await store.accounts()

    run(scenario())


# -- group commit ------------------------------------------------------------------


@pytest.mark.parametrize(("group_commit", "commits"), [(True, 1), (False, 40)])
def test_operations_queued_together_share_one_commit(tmp_path: Path, group_commit: bool, commits: int) -> None:
    async def scenario() -> tuple[int, list[Any]]:
        store = await SqliteStore.open(tmp_path / "ledger.db", ACCOUNTS, group_commit=group_commit)
        try:
            executions = await asyncio.gather(*(store.execute("debit", f"t{i}", "alice", 30) for i in range(40)))
            await store.check_invariants()
            return store.commits, list(executions)
        finally:
            await store.close()

    committed, executions = run(scenario())
    assert committed == commits
    # Decided in order, each seeing the ones before it: 33 fit into 1,000, the rest are refused.
    assert [entry.balance for entry, _ in executions[:33]] == list(range(970, 0, -30))
    assert {entry.rejection for entry, _ in executions[33:]} == {"insufficient_funds"}
