"""Databases as earlier releases left them, and the catalogue that says whether two schemas are the same.

``earlier_schemas/<schema>/`` holds each migration file as it was in the
commit named in its file name (``0002_name.<commit>.sql``), and the saga
log's SQLite schemas from before it had versions (``saga_log.<commit>.sql``).
Files that migrations changed in place are there once per change: a
database made between two such changes keeps what it applied.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

FOLDER = Path(__file__).resolve().parent / "earlier_schemas"


@dataclass(frozen=True)
class Earlier:
    """A database written by an earlier release: the files it applied, in order."""

    schema: str
    files: tuple[str, ...]
    #: The version its own code recorded, or numbers it at (see saga/logs/sqlite.py).
    version: int

    @property
    def name(self) -> str:
        """Its version and the commit of its newest file, as in test ids: ``2@1e91c82``."""
        return f"{self.version}@{self.files[-1].rsplit('.', 2)[-2]}"

    def scripts(self) -> list[tuple[int, str, str]]:
        """(version, migration name, SQL) of each file, in order."""
        return [
            (number, file.split(".")[0].partition("_")[2], (FOLDER / self.schema / file).read_text(encoding="utf-8"))
            for number, file in enumerate(self.files, start=1)
        ]


def _releases(schema: str, *files: str) -> list[Earlier]:
    return [Earlier(schema, tuple(files[: count + 1]), count + 1) for count in range(len(files))]


#: Each schema the ledger's PostgreSQL store has written. 0001 gained
#: ledger_identity in 0f8d867, and 0002 changed ledger_execute in f8b2073,
#: after databases had applied them.
LEDGER_POSTGRESQL: Sequence[Earlier] = [
    Earlier("ledger_postgresql", ("0001_ledger.89f25d4.sql",), 1),
    *_releases(
        "ledger_postgresql",
        "0001_ledger.0f8d867.sql",
        "0002_unrecorded_reversal_refusal.1e91c82.sql",
    ),
    *_releases(
        "ledger_postgresql",
        "0001_ledger.0f8d867.sql",
        "0002_unrecorded_reversal_refusal.f8b2073.sql",
        "0003_ledger_position.f2161f6.sql",
        "0004_account_openings.3957718.sql",
    )[1:],
]
#: Each schema the ledger's SQLite store has written: 0001 gained ledger_identity in 0f8d867.
LEDGER_SQLITE: Sequence[Earlier] = [
    Earlier("ledger_sqlite", ("0001_ledger.9a78766.sql",), 1),
    *_releases("ledger_sqlite", "0001_ledger.0f8d867.sql", "0002_account_openings.3957718.sql"),
]
#: Each schema the saga log's PostgreSQL log has written: 0001's claim index changed in b59ffda.
SAGA_LOG_POSTGRESQL: Sequence[Earlier] = [
    Earlier("saga_log_postgresql", ("0001_saga_log.47fd9f1.sql",), 1),
    *_releases(
        "saga_log_postgresql",
        "0001_saga_log.b59ffda.sql",
        "0002_service_names_and_callers.c648fe7.sql",
        "0003_ledger_marks_and_quarantines.60cba5e.sql",
        "0004_operator_actions_and_deadlines.891827b.sql",
    ),
]
#: Each schema the saga log's SQLite log wrote before it recorded versions: one file each, no version table.
SAGA_LOG_SQLITE: Sequence[Earlier] = [
    Earlier("saga_log_sqlite", (f"saga_log.{commit}.sql",), version)
    for version, commit in enumerate(("89c5802", "377022f", "47fd9f1", "c648fe7", "60cba5e", "891827b"), start=1)
]


def create_ledger_sqlite(path: Path, earlier: Earlier) -> None:
    """A ledger file as ``earlier`` left it, with its own code's version table."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) STRICT"
        )
        for version, name, sql in earlier.scripts():
            connection.executescript(sql)
            connection.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (version, name))
    connection.close()


def create_saga_log_sqlite(path: Path, earlier: Earlier) -> None:
    """A saga log file as ``earlier`` left it: no version table then."""
    with sqlite3.connect(path) as connection:
        for _, _, sql in earlier.scripts():
            connection.executescript(sql)
    connection.close()


async def create_postgres(dsn: str, earlier: Earlier) -> None:
    """A database as ``earlier`` left it, with the version table its code kept.

    The ledger's 0001 made its own schema_version; the saga log's code kept
    saga_log_schema with versions only.
    """
    connection = await asyncpg.connect(dsn)
    try:
        saga_log = earlier.schema.startswith("saga_log")
        if saga_log:
            await connection.execute("CREATE TABLE saga_log_schema (version integer PRIMARY KEY)")
        for version, name, sql in earlier.scripts():
            async with connection.transaction():
                await connection.execute(sql)
                if saga_log:
                    await connection.execute("INSERT INTO saga_log_schema (version) VALUES ($1)", version)
                else:
                    await connection.execute(
                        "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
                    )
    finally:
        await connection.close()


def _squeezed(sql: str | None) -> str | None:
    return None if sql is None else re.sub(r"\s+", " ", sql).strip()


def sqlite_catalog(path: Path, version_table: str) -> dict[str, Any]:
    """What the migrations decided in a SQLite file: columns, keys, indexes, triggers, recorded versions.

    Tables are compared by their columns rather than their CREATE text, which
    ALTER TABLE rewrites; indexes and triggers by their text, spaces squeezed.
    """
    with sqlite3.connect(path) as connection:
        objects = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        catalog: dict[str, Any] = {
            "tables": {
                name: (
                    connection.execute(f"PRAGMA table_xinfo({name})").fetchall(),
                    connection.execute(f"PRAGMA foreign_key_list({name})").fetchall(),
                    "STRICT" in (sql or "").rsplit(")", 1)[-1].upper(),
                )
                for kind, name, sql in objects
                if kind == "table"
            },
            "indexes": {
                name: _squeezed(sql) or connection.execute(f"PRAGMA index_xinfo({name})").fetchall()
                for kind, name, sql in objects
                if kind == "index"
            },
            "triggers": {name: _squeezed(sql) for kind, name, sql in objects if kind == "trigger"},
            "versions": connection.execute(f"SELECT version, name FROM {version_table} ORDER BY 1").fetchall(),
        }
    connection.close()
    return catalog


async def postgres_catalog(dsn: str, version_table: str) -> dict[str, list[tuple[object, ...]]]:
    """What the migrations decided in a database: columns, constraints, indexes, triggers, functions, versions."""
    queries = {
        "columns": "SELECT table_name, ordinal_position, column_name, data_type, collation_name, column_default, "
        "is_nullable, is_identity FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
        "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
        "versions": f"SELECT version, name FROM {version_table} ORDER BY 1",
    }
    connection = await asyncpg.connect(dsn)
    try:
        return {key: [tuple(row) for row in await connection.fetch(sql)] for key, sql in queries.items()}
    finally:
        await connection.close()
