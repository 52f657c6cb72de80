"""One migration mechanism for the four schemas: versions, gaps, locks, newer schemas, included functions.

Every database an earlier release wrote (tests/support/earlier_schemas/)
opens with today's code, keeps its rows, and ends in the schema a new
database has: the same columns, constraints, indexes, triggers, function
bodies and recorded versions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from saga.logs import SagaLogError
from saga.logs import postgres as saga_log_postgres
from saga.logs import sqlite as saga_log_sqlite
from saga.logs.postgres import PostgresSagaLog
from saga.logs.sqlite import SqliteSagaLog
from saga.records import AccountRef, SagaRecord
from saga.states import SagaState
from server.shared.migrations import Schema, migrate_postgres, migrate_sqlite
from server.stores import StoreError
from server.stores import postgres as ledger_postgres
from server.stores import sqlite as ledger_sqlite
from server.stores.postgres import PostgresStore
from server.stores.sqlite import SqliteStore
from tests.support.postgres import fresh_database_async
from tests.support.schemas import (
    LEDGER_POSTGRESQL,
    LEDGER_SQLITE,
    SAGA_LOG_POSTGRESQL,
    SAGA_LOG_SQLITE,
    Earlier,
    create_ledger_sqlite,
    create_postgres,
    create_saga_log_sqlite,
    postgres_catalog,
    sqlite_catalog,
)

ACCOUNTS = {"alice": 1_000, "bob": 0}

#: A transfer of 100 from alice to bob, as every ledger schema so far holds it.
LEDGER_ROWS = """
INSERT INTO accounts (user_id, balance) VALUES ('alice', 900), ('bob', 100);
INSERT INTO opening_balances (user_id, balance) VALUES ('alice', 1000), ('bob', 0);
INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance)
VALUES ('t1', 'debit', 'alice', 100, 'applied', 900), ('t1', 'credit', 'bob', 100, 'applied', 100);
"""

#: A saga half way, as every saga log schema so far holds it; {prefix} names the PostgreSQL log's tables.
SAGA_ROWS = """
INSERT INTO {prefix}sagas (transaction_id, source_{urls}, source_user, target_{urls}, target_user, amount, state,
                           created_at_ms, updated_at_ms)
VALUES ('old', 'http://a.test', 'alice', 'http://b.test', 'bob', 100, 'CREDITING', 1000, 1001);
INSERT INTO {prefix}events (transaction_id, at_ms, kind, state) VALUES ('old', 1000, 'state', 'PENDING');
"""


def ids(earlier: Earlier) -> str:
    return earlier.name


# -- the mechanism ---------------------------------------------------------------


def schema_in(folder: Path, files: dict[str, str]) -> Schema:
    for name, sql in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(sql, encoding="utf-8")
    return Schema(folder, "versions", StoreError, "upgrade first")


def test_a_gap_in_the_versions_is_refused(tmp_path: Path) -> None:
    schema = schema_in(tmp_path, {"0001_a.sql": "CREATE TABLE a (x INTEGER);", "0003_c.sql": "SELECT 1;"})
    with pytest.raises(StoreError, match="skip from 1 to 3"):
        schema.migrations()


def test_a_file_not_named_as_a_migration_is_refused(tmp_path: Path) -> None:
    schema = schema_in(tmp_path, {"0001_a.sql": "SELECT 1;", "2_b.sql": "SELECT 1;"})
    with pytest.raises(StoreError, match=r"2_b\.sql is not named NNNN_name\.sql"):
        schema.migrations()


def test_an_included_function_file_stands_in_every_migration_that_includes_it(tmp_path: Path) -> None:
    schema = schema_in(
        tmp_path,
        {
            "functions/f.sql": "SELECT 'the body';\n",
            "0001_a.sql": "SELECT 1;\n\\ir functions/f.sql\n",
            "0002_b.sql": "-- again\n\\ir functions/f.sql\n",
        },
    )
    assert [migration.sql for migration in schema.migrations()] == [
        "SELECT 1;\nSELECT 'the body';\n\n",
        "-- again\nSELECT 'the body';\n\n",
    ]


@pytest.mark.parametrize("name", ["functions/missing.sql", "../0001_a.sql", "other/f.sql"])
def test_only_a_file_of_functions_can_be_included(tmp_path: Path, name: str) -> None:
    schema = schema_in(tmp_path, {"0001_a.sql": f"\\ir {name}\n", "other/f.sql": "SELECT 1;"})
    with pytest.raises(StoreError, match=f"includes {re.escape(name)}, which is no file functions/NAME.sql"):
        schema.migrations()


def test_a_sqlite_database_newer_than_the_code_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    schema = schema_in(tmp_path / "sql", {"0001_a.sql": "CREATE TABLE a (x INTEGER);"})
    path = tmp_path / "db.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(connection, schema, "the test file")
    connection.execute("INSERT INTO versions (version, name) VALUES (2, 'from_the_future')")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"^the schema of the test file is at version 2, newer than this code's 1"):
        migrate_sqlite(connection, schema, "the test file")
    connection.close()
    assert path.read_bytes() == before


def test_a_sqlite_database_up_to_date_is_only_read(tmp_path: Path) -> None:
    schema = schema_in(tmp_path / "sql", {"0001_a.sql": "CREATE TABLE a (x INTEGER);"})
    path = tmp_path / "db.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(writer, schema, "the file")
    writer.execute("BEGIN IMMEDIATE")
    try:
        # Another connection holds the write lock: opening the up-to-date file does not wait for it.
        reader = sqlite3.connect(path, isolation_level=None, timeout=0)
        migrate_sqlite(reader, schema, "the file")
        reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_failing_migration_leaves_the_sqlite_database_at_the_version_before(tmp_path: Path) -> None:
    schema = schema_in(tmp_path / "sql", {"0001_a.sql": "CREATE TABLE a (x INTEGER);"})
    path = tmp_path / "db.sqlite"
    connection = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(connection, schema, "the file")
    (schema.folder / "0002_b.sql").write_text("CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
        migrate_sqlite(connection, schema, "the file")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"a", "versions"}
    assert connection.execute("SELECT version FROM versions").fetchall() == [(1,)]
    connection.close()


def test_postgres_processes_migrating_at_once_apply_each_version_once(tmp_path: Path) -> None:
    files = {"0001_a.sql": "CREATE TABLE a (x integer);", "0002_b.sql": "ALTER TABLE a ADD y integer;"}
    schema = dataclasses.replace(schema_in(tmp_path, files), lock_key=0x5A6A_1ED6_E500_00FF)

    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            connections = [await asyncpg.connect(dsn) for _ in range(4)]
            try:
                await asyncio.gather(*(migrate_postgres(connection, schema, "db") for connection in connections))
                versions = await connections[0].fetch("SELECT version, name FROM versions ORDER BY 1")
                assert [tuple(row) for row in versions] == [(1, "a"), (2, "b")]
            finally:
                for connection in connections:
                    await connection.close()

    asyncio.run(scenario())


def test_a_postgres_database_newer_than_the_code_is_refused_and_left_as_it_is() -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn:
            store = await PostgresStore.open(dsn, ACCOUNTS)
            await store.close()
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute("INSERT INTO schema_version (version, name) VALUES (99, 'from_the_future')")
            finally:
                await connection.close()
            before = await postgres_catalog(dsn, "schema_version")
            with pytest.raises(StoreError, match="at version 99, newer than this code's"):
                await PostgresStore.open(dsn, ACCOUNTS)
            assert await postgres_catalog(dsn, "schema_version") == before

    asyncio.run(scenario())


#: Each function file, the newest migration that includes it, and the file's SHA-256 as that migration applied it.
FUNCTIONS_AS_LAST_APPLIED = {
    "server/stores/sql/postgresql/functions/ledger_execute.sql": (
        "0005_every_database_as_a_new_one.sql",
        "2d5e9bce052e0ca21674f99d10e6968a9cb02c9e5916a314a7aa2cb91c48a3de",
    ),
    "server/stores/sql/postgresql/functions/ledger_execute_group.sql": (
        "0006_group_commit.sql",
        "4f282315259c60aa530601a87de9da9b00daeadff8eb33451bccba4d27032892",
    ),
    "server/stores/sql/postgresql/functions/current_ledger_position.sql": (
        "0003_ledger_position.sql",
        "7c9998ab4a3847038b8b81de3fafe675164d4cc9e2f348f2d6e31ffeddebdcc5",
    ),
    "server/stores/sql/postgresql/functions/ledger_execute_with_position.sql": (
        "0003_ledger_position.sql",
        "0cfaae22cfc2ff338972b93232d80b64cee9167a5ec94a706f089dbaceaa39bd",
    ),
    "server/stores/sql/postgresql/functions/account_openings_refuse_change.sql": (
        "0004_account_openings.sql",
        "c40f5e3b3ea3450056d8dfbd2ba1b81e003691e8caf39319c60f1124fafc83a2",
    ),
    "saga/logs/sql/postgresql/functions/saga_events_are_append_only.sql": (
        "0004_operator_actions_and_deadlines.sql",
        "435b6919d223697e2b7d125b32a92875e14bf461b31802656178acb2b5695e02",
    ),
}


def test_a_changed_function_file_is_applied_again_by_a_new_migration() -> None:
    """A database past the newest migration that includes a function keeps the body that migration applied.

    So a change to the file needs a migration that includes it again, and
    its new checksum recorded here beside that migration, never beside an
    older one.
    """
    root = Path(__file__).resolve().parents[2]
    found = {}
    for schema in (ledger_postgres.SCHEMA, saga_log_postgres.SCHEMA):
        for function in sorted((schema.folder / "functions").glob("*.sql")):
            including = [
                path.name
                for path in sorted(schema.folder.glob("*.sql"))
                if f"\\ir functions/{function.name}\n" in path.read_text(encoding="utf-8")
            ]
            found[str(function.relative_to(root))] = (
                including[-1] if including else "no migration",
                hashlib.sha256(function.read_bytes()).hexdigest(),
            )
    assert found == FUNCTIONS_AS_LAST_APPLIED


def test_the_sqlite_logs_partial_index_repeats_the_condition_its_reads_use(tmp_path: Path) -> None:
    async def create() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        await log.close()

    asyncio.run(create())
    with sqlite3.connect(tmp_path / "saga.db") as connection:
        (sql,) = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'sagas_with_a_deadline'").fetchone()
    connection.close()
    assert saga_log_sqlite._UNFINISHED in " ".join(sql.split())


# -- every earlier database, upgraded --------------------------------------------


def insert_sqlite(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as connection:
        connection.executescript(sql)
    connection.close()


async def insert_postgres(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def has_ledger_identity(earlier: Earlier) -> bool:
    return "CREATE TABLE ledger_identity" in "".join(sql for _, _, sql in earlier.scripts())


async def check_ledger(store: Any, earlier: Earlier) -> None:
    """The earlier release's rows read back, and the ledger goes on from them."""
    if has_ledger_identity(earlier):
        assert store.ledger_id == "ledger-of-old"
    else:
        assert store.ledger_id
    assert (await store.balance("alice"), await store.balance("bob")) == (900, 100)
    replayed = await store.execute("debit", "t1", "alice", 100)
    assert (replayed[0].outcome, replayed[0].balance, replayed[1]) == ("applied", 900, True)
    credited = await store.execute("credit", "t2", "alice", 30)
    # Today's rule: the reversal of a debit that never landed is a void, whatever
    # else stands under the id (ledger_execute of 0002 before f8b2073 refused it).
    voided = await store.execute("compensate_debit", "t2", "bob", 30)
    assert (credited[0].outcome, credited[0].balance, voided[0].outcome) == ("applied", 930, "voided")
    await store.check_invariants()


@pytest.mark.parametrize("earlier", LEDGER_SQLITE, ids=ids)
def test_a_sqlite_ledger_of_an_earlier_release_opens_keeps_its_rows_and_ends_as_a_new_one(
    earlier: Earlier, tmp_path: Path
) -> None:
    path, fresh = tmp_path / "earlier.db", tmp_path / "fresh.db"
    create_ledger_sqlite(path, earlier)
    identity = "INSERT INTO ledger_identity VALUES (1, 'ledger-of-old');" if has_ledger_identity(earlier) else ""
    insert_sqlite(path, LEDGER_ROWS + identity)

    async def scenario() -> None:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            await check_ledger(store, earlier)
        finally:
            await store.close()
        await (await SqliteStore.open(fresh, ACCOUNTS)).close()

    asyncio.run(scenario())
    assert sqlite_catalog(path, "schema_version") == sqlite_catalog(fresh, "schema_version")


@pytest.mark.parametrize("earlier", LEDGER_POSTGRESQL, ids=ids)
def test_a_postgres_ledger_of_an_earlier_release_opens_keeps_its_rows_and_ends_as_a_new_one(earlier: Earlier) -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn, fresh_database_async() as fresh:
            await create_postgres(dsn, earlier)
            identity = (
                "INSERT INTO ledger_identity VALUES (1, 'ledger-of-old');" if has_ledger_identity(earlier) else ""
            )
            await insert_postgres(dsn, LEDGER_ROWS + identity)
            store = await PostgresStore.open(dsn, ACCOUNTS)
            try:
                await check_ledger(store, earlier)
            finally:
                await store.close()
            await (await PostgresStore.open(fresh, ACCOUNTS)).close()
            assert await postgres_catalog(dsn, "schema_version") == await postgres_catalog(fresh, "schema_version")

    asyncio.run(scenario())


async def check_saga_log(log: Any, earlier: Earlier, *, leased: bool) -> None:
    """The earlier release's saga reads back, and the log takes new ones."""
    old = await log.get("old")
    assert old is not None
    assert (old.state, old.amount, old.source, old.target) == (
        SagaState.CREDITING,
        100,
        AccountRef("http://a.test", "alice"),
        AccountRef("http://b.test", "bob"),
    )
    # A saga from before leases was driven by a run of its day: the next claim resumes it.
    assert old.epoch == (0 if leased else 1)
    assert [(event.kind, event.state) for event in await log.history("old")] == [("state", SagaState.PENDING)]
    new = SagaRecord("new", AccountRef("http://a.test", "alice"), AccountRef("http://b.test", "bob"), 5)
    new.created_at_ms = new.updated_at_ms = 2_000
    new.deadline_ms = 9_000
    await log.submit(new)
    assert [(saga.transaction_id, saga.deadline_ms) for saga in await log.page(limit=5)] == [
        ("new", 9_000),
        ("old", None),
    ]


@pytest.mark.parametrize("earlier", SAGA_LOG_SQLITE, ids=ids)
def test_a_sqlite_saga_log_of_an_earlier_release_opens_keeps_its_rows_and_ends_as_a_new_one(
    earlier: Earlier, tmp_path: Path
) -> None:
    path, fresh = tmp_path / "earlier.db", tmp_path / "fresh.db"
    create_saga_log_sqlite(path, earlier)
    insert_sqlite(path, SAGA_ROWS.format(prefix="", urls="url" if earlier.version == 1 else "urls"))

    async def scenario() -> None:
        log = await SqliteSagaLog.open(path, create=False)
        try:
            await check_saga_log(log, earlier, leased=earlier.version >= 3)
        finally:
            await log.close()
        await (await SqliteSagaLog.open(fresh)).close()

    asyncio.run(scenario())
    assert sqlite_catalog(path, "saga_log_schema") == sqlite_catalog(fresh, "saga_log_schema")
    assert sqlite_catalog(path, "saga_log_schema")["versions"] == [
        (migration.version, migration.name) for migration in saga_log_sqlite.SCHEMA.migrations()
    ]


@pytest.mark.parametrize("earlier", SAGA_LOG_POSTGRESQL, ids=ids)
def test_a_postgres_saga_log_of_an_earlier_release_opens_keeps_its_rows_and_ends_as_a_new_one(
    earlier: Earlier,
) -> None:
    async def scenario() -> None:
        async with fresh_database_async() as dsn, fresh_database_async() as fresh:
            await create_postgres(dsn, earlier)
            await insert_postgres(dsn, SAGA_ROWS.format(prefix="saga_", urls="urls"))
            log = await PostgresSagaLog.open(dsn)
            try:
                await check_saga_log(log, earlier, leased=True)
            finally:
                await log.close()
            await (await PostgresSagaLog.open(fresh)).close()
            assert await postgres_catalog(dsn, "saga_log_schema") == await postgres_catalog(fresh, "saga_log_schema")

    asyncio.run(scenario())


def test_a_sqlite_saga_log_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "saga.db"

    async def open_and_close() -> None:
        await (await SqliteSagaLog.open(path)).close()

    asyncio.run(open_and_close())
    latest = len(saga_log_sqlite.SCHEMA.migrations())
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO saga_log_schema (version, name) VALUES (?, 'from_the_future')", (latest + 1,))
    connection.close()
    with pytest.raises(SagaLogError, match=f"at version {latest + 1}, newer than this code's {latest}"):
        asyncio.run(open_and_close())


def test_the_sqlite_schemas_apply_whole_statements(tmp_path: Path) -> None:
    # Triggers hold semicolons of their own: the split must keep each one whole.
    for schema in (ledger_sqlite.SCHEMA, saga_log_sqlite.SCHEMA):
        connection = sqlite3.connect(tmp_path / f"{schema.version_table}.db", isolation_level=None)
        migrate_sqlite(connection, schema, "the file")
        (count,) = connection.execute(f"SELECT count(*) FROM {schema.version_table}").fetchone()
        connection.close()
        assert count == len(schema.migrations())
