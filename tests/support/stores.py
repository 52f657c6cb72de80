"""Every ledger store the tests run against, by name: one line per store.

A factory opens a fresh store with the given accounts, using ``folder`` (a new,
empty folder) for any files it needs, and closes it when the context ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import MappingProxyType

from server.stores import LedgerStore
from server.stores.memory import MemoryStore
from server.stores.postgres import PostgresStore
from server.stores.sqlite import SqliteStore
from tests.support.postgres import fresh_database_async

#: Every store checks its own invariants.
CheckedStore = LedgerStore


StoreFactory = Callable[[Mapping[str, int], Path], AbstractAsyncContextManager[CheckedStore]]


@asynccontextmanager
async def memory_store(accounts: Mapping[str, int], folder: Path) -> AsyncIterator[CheckedStore]:
    yield MemoryStore.create(accounts)


@asynccontextmanager
async def sqlite_store(accounts: Mapping[str, int], folder: Path) -> AsyncIterator[CheckedStore]:
    store = await SqliteStore.open(folder / "ledger.db", accounts)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def postgres_store(accounts: Mapping[str, int], folder: Path) -> AsyncIterator[CheckedStore]:
    async with fresh_database_async("store") as dsn:
        store = await PostgresStore.open(dsn, accounts)
        try:
            yield store
        finally:
            await store.close()


STORES: Mapping[str, StoreFactory] = MappingProxyType(
    {"memory": memory_store, "sqlite": sqlite_store, "postgresql": postgres_store}
)
