r"""Versioned SQL schemas: one mechanism for the ledger's and the saga log's, on SQLite and on PostgreSQL.

A schema is a folder of ``NNNN_name.sql`` files, numbered 1, 2, 3 ... with no
gap. A database records each version it has applied in the schema's version
table, in the same transaction as the version's changes, and is brought up to
date when it is opened, under a lock, so that two processes starting at once
take turns and the second finds the work done: ``BEGIN IMMEDIATE`` on SQLite,
a session advisory lock on PostgreSQL. A database whose schema is newer than
this code is refused before anything in it changes, since this code cannot
know what the newer schema means.

A line ``\ir functions/NAME.sql`` in a migration stands for that file, as in
psql. A PL/pgSQL function lives in its file alone; the migration that creates
it and every one that changes it include the file, so no body is copied from
one migration to the next. An upgraded database and a new one thus end with
the function of today's file, as long as whoever edits the file also adds a
migration that includes it again (the schema tests compare a database at
every earlier version, upgraded, with a new one).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_INCLUDE = re.compile(r"^\\ir[ \t]+(\S+)[ \t]*$", re.MULTILINE)
_INCLUDED_FILE = re.compile(r"^functions/[a-z0-9_]+\.sql$")

_SQLITE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT
"""
_POSTGRES_VERSION_TABLE = """
CREATE TABLE {table} (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    #: The script, with each ``\ir`` line replaced by the file it names.
    sql: str


@dataclass(frozen=True, slots=True)
class Schema:
    """One versioned schema: its folder of migrations, the table that records them, and how it refuses."""

    folder: Path
    version_table: str
    #: Raised, with a one-line message, for a newer schema or a broken folder.
    error: type[Exception]
    #: What to do about a schema newer than this code, as the refusal says it.
    upgrade_first: str
    #: PostgreSQL's session advisory lock held while migrating; each schema has its own.
    lock_key: int = 0

    def migrations(self) -> list[Migration]:
        """Every migration, in version order, numbered 1, 2, 3 ... with no gap."""
        found = []
        for path in sorted(self.folder.glob("*.sql")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise self.error(f"migration file {path.name} is not named NNNN_name.sql")
            found.append(Migration(int(match.group(1)), match.group(2), self._expand(path)))
        for expected, migration in enumerate(found, start=1):
            if migration.version != expected:
                raise self.error(f"the migrations in {self.folder} skip from {expected - 1} to {migration.version}")
        return found

    def pending(self, applied: int, where: str) -> list[Migration]:
        """The migrations to apply to a database at version ``applied``; refuses a newer schema."""
        known = self.migrations()
        latest = known[-1].version if known else 0
        if applied > latest:
            raise self.error(
                f"the schema of {where} is at version {applied}, newer than this code's {latest}: {self.upgrade_first}"
            )
        return known[applied:]

    def _expand(self, path: Path) -> str:
        def included(match: re.Match[str]) -> str:
            name = match.group(1)
            if not _INCLUDED_FILE.match(name) or not (self.folder / name).is_file():
                raise self.error(f"migration {path.name} includes {name}, which is no file functions/NAME.sql")
            return (self.folder / name).read_text(encoding="utf-8")

        return _INCLUDE.sub(included, path.read_text(encoding="utf-8"))


# -- SQLite --------------------------------------------------------------------

#: The version of a database from before its version table, read off its tables: 0 for a new one.
Unnumbered = Callable[[sqlite3.Connection], int]


@contextmanager
def sqlite_write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the file's write lock before the first read, so what the
    transaction reads no other connection changes before it commits. The
    connection must have been opened with ``isolation_level=None``.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite may have rolled back already (a full disk, an I/O error): then
        # there is nothing left to undo, and the first error is the one to tell.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def sqlite_version(connection: sqlite3.Connection, schema: Schema, unnumbered: Unnumbered | None = None) -> int:
    """The version the database is at: the highest one recorded, else what ``unnumbered`` reads, else 0."""
    if _has_table(connection, schema.version_table):
        (applied,) = connection.execute(f"SELECT coalesce(max(version), 0) FROM {schema.version_table}").fetchone()
        return int(applied)
    return unnumbered(connection) if unnumbered is not None else 0


def migrate_sqlite(
    connection: sqlite3.Connection, schema: Schema, where: str, unnumbered: Unnumbered | None = None
) -> None:
    """Bring the database up to date in a write transaction of its own; one that is up to date is only read.

    So that opening an up-to-date file (a reader beside a busy writer) never
    waits for its write lock. One from before its version table gets it,
    even with nothing left to apply.
    """
    behind = schema.pending(sqlite_version(connection, schema, unnumbered), where)
    if behind or not _has_table(connection, schema.version_table):
        with sqlite_write_transaction(connection):
            apply_sqlite(connection, schema, where, unnumbered)


def apply_sqlite(
    connection: sqlite3.Connection, schema: Schema, where: str, unnumbered: Unnumbered | None = None
) -> None:
    """Apply the missing migrations inside the caller's ``BEGIN IMMEDIATE`` transaction; refuse a newer schema.

    A database from before its version table gets one, with the versions that
    ``unnumbered`` found recorded as if they had been applied here.
    """
    if not connection.in_transaction:
        raise RuntimeError("migrations run inside the caller's BEGIN IMMEDIATE transaction")
    numbered = _has_table(connection, schema.version_table)
    applied = sqlite_version(connection, schema, unnumbered)
    todo = schema.pending(applied, where)
    insert = f"INSERT INTO {schema.version_table} (version, name) VALUES (?, ?)"
    if not numbered:
        connection.execute(_SQLITE_VERSION_TABLE.format(table=schema.version_table))
        connection.executemany(insert, [(m.version, m.name) for m in schema.migrations()[:applied]])
    for migration in todo:
        for statement in sqlite_statements(migration.sql):
            connection.execute(statement)
        connection.execute(insert, (migration.version, migration.name))


def sqlite_statements(script: str) -> list[str]:
    """The statements of a script, to run one by one inside the caller's transaction.

    ``executescript`` would commit the open transaction first, so the script is split here.
    """
    statements = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if any(line.strip() and not line.strip().startswith("--") for line in current.splitlines()):
        raise sqlite3.OperationalError(f"the migration ends in an incomplete statement: {current.strip()[:60]}")
    return statements


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return found is not None


# -- PostgreSQL ----------------------------------------------------------------


@asynccontextmanager
async def postgres_migrated(connection: Any, schema: Schema, where: str) -> AsyncIterator[None]:
    """Under the schema's advisory lock, bring the database up to date; the lock is held until the block ends.

    ``connection`` is an asyncpg connection. A caller that sets up more than
    the schema (accounts, say) does it in the block, one process at a time.
    """
    await connection.execute("SELECT pg_advisory_lock($1)", schema.lock_key)
    try:
        await _apply_postgres(connection, schema, where)
        yield
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", schema.lock_key)


async def migrate_postgres(connection: Any, schema: Schema, where: str) -> None:
    """Bring the database up to date under the schema's advisory lock; refuse a newer schema."""
    async with postgres_migrated(connection, schema, where):
        pass


async def _apply_postgres(connection: Any, schema: Schema, where: str) -> None:
    table = schema.version_table
    columns = {
        row[0]
        for row in await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = $1",
            table,
        )
    }
    applied = int(await connection.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}")) if columns else 0
    todo = schema.pending(applied, where)
    if not columns:
        await connection.execute(_POSTGRES_VERSION_TABLE.format(table=table))
    elif "name" not in columns:
        await _name_the_versions(connection, schema)
    for migration in todo:
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                f"INSERT INTO {table} (version, name) VALUES ($1, $2)", migration.version, migration.name
            )


async def _name_the_versions(connection: Any, schema: Schema) -> None:
    """Give a version table from before names were recorded the columns of today's, filled in."""
    table = schema.version_table
    known = schema.migrations()
    async with connection.transaction():
        await connection.execute(
            f"ALTER TABLE {table} ADD COLUMN name text, ADD COLUMN applied_at timestamptz NOT NULL DEFAULT now()"
        )
        await connection.execute(
            f"UPDATE {table} SET name = known.name FROM unnest($1::integer[], $2::text[]) AS known(version, name) "
            f"WHERE {table}.version = known.version",
            [migration.version for migration in known],
            [migration.name for migration in known],
        )
        await connection.execute(f"ALTER TABLE {table} ALTER COLUMN name SET NOT NULL")
