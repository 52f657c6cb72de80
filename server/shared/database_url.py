"""One reader for database URLs, shared by the accounts service's ``--database`` and the saga's ``--db``.

The forms: ``memory``; ``sqlite:///relative/file.db`` and ``sqlite:////absolute/file.db``;
a bare path, which means SQLite; and ``postgresql://…`` (or ``postgres://…``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DatabaseKind = Literal["memory", "sqlite", "postgresql"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CREDENTIALS = re.compile(r"(?<=://)[^@/]*@")


class DatabaseUrlError(ValueError):
    """The text is not a database URL this project reads; the message says why."""


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    kind: DatabaseKind
    #: The SQLite file; None for the other kinds.
    path: Path | None = None
    #: The PostgreSQL connection string; None for the other kinds.
    dsn: str | None = None

    def __str__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        if self.kind == "postgresql":
            assert self.dsn is not None
            # Never print a password into a log line or an error message.
            return _CREDENTIALS.sub("***@", self.dsn)
        return "memory"


def parse_database_url(text: str) -> DatabaseUrl:
    """Read one database URL; raises DatabaseUrlError with a one-line reason."""
    value = text.strip()
    if not value:
        raise DatabaseUrlError("the database URL is empty")
    if value == "memory":
        return DatabaseUrl("memory")
    match = _SCHEME.match(value)
    if match is None:
        return DatabaseUrl("sqlite", path=Path(value))
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        if not value[match.end() :]:
            raise DatabaseUrlError(f"{value!r} names no PostgreSQL server")
        return DatabaseUrl("postgresql", dsn=value)
    if scheme == "sqlite":
        rest = value[match.end() :]
        if not rest.startswith("/") or len(rest) < 2:
            raise DatabaseUrlError(
                f"{value!r}: write sqlite:///relative/file.db or sqlite:////absolute/file.db, or a bare path"
            )
        return DatabaseUrl("sqlite", path=Path(rest[1:]))
    raise DatabaseUrlError(f"{value!r}: the scheme {scheme!r} is not one of memory, sqlite://, postgresql://")
