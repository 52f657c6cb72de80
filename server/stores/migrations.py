"""Versioned schema for the SQL stores: ``sql/<dialect>/NNNN_name.sql``, applied in order.

Each store keeps the versions it has applied in a ``schema_version`` table and
applies the missing ones at start, inside its own lock. A database whose
schema is newer than this code is refused, since this code cannot know what
the newer schema means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from server.stores import StoreError

Dialect = Literal["sqlite", "postgresql"]

SQL_FOLDER = Path(__file__).resolve().parent / "sql"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """Every migration of ``dialect``, in version order, numbered 1, 2, 3 ... with no gap."""
    found = []
    for path in sorted((SQL_FOLDER / dialect).glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise StoreError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise StoreError(f"{dialect} migrations skip from {expected - 1} to {migration.version}")
    return found


def pending(dialect: Dialect, applied: int, where: str) -> list[Migration]:
    """The migrations to apply to a database at version ``applied``; refuses a newer schema."""
    known = migrations(dialect)
    latest = known[-1].version if known else 0
    if applied > latest:
        raise StoreError(
            f"the schema of {where} is at version {applied}, newer than this code's {latest}: "
            "upgrade the service before starting it on this database"
        )
    return known[applied:]
