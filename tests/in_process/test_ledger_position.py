"""The ledger's position: it grows with every recorded entry, and only a restored older copy answers less.

Every store is checked alike, then each one's own way back in time (a copy of
the memory ledger, a backup of the SQLite file, a dump of the PostgreSQL
database), then the ``Ledger-Position`` header over HTTP.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from server import Settings, create_app
from server.contract import load_contract
from server.ledger import Entry, IdempotencyKeyReused, Operation
from server.stores import LedgerStore, StorageUnavailable
from server.stores.memory import MemoryStore
from server.stores.postgres import PostgresStore
from server.stores.sqlite import SqliteStore
from tests.contract.test_drift import resolve
from tests.support.aio import run
from tests.support.inprocess import asgi_client, ledger_call
from tests.support.postgres import fresh_database_async
from tests.support.stores import STORES

ACCOUNTS = {"alice": 1_000, "bob": 0}

T = TypeVar("T")


# -- every store -------------------------------------------------------------------


async def decided(store: LedgerStore, operation: Operation, *request: Any) -> tuple[Entry, bool, int]:
    """The entry, whether it was replayed, and the position answered with it."""
    execution, position = await store.execute_with_position(operation, *request)
    assert execution is not None
    entry, replayed = execution
    return entry, replayed, position


async def grows_with_entries_only(store: LedgerStore) -> None:
    assert await store.position() == 0

    debit, replayed, after_debit = await decided(store, "debit", "t1", "alice", 100)
    assert (debit.outcome, replayed, after_debit) == ("applied", False, 1)
    assert await store.position() == 1

    # A replay records nothing, and answers the position as it is now.
    again, replayed, on_replay = await decided(store, "debit", "t1", "alice", 100)
    assert (again.sequence, replayed, on_replay) == (debit.sequence, True, 1)

    # Reads record nothing, and answer the position with what they read, found or not.
    assert await store.balance_with_position("alice") == (900, 1)
    assert await store.balance_with_position("zed") == (None, 1)
    accounts, at = await store.accounts_with_position()
    assert ([(account.user_id, account.balance) for account in accounts], at) == ([("alice", 900), ("bob", 0)], 1)
    trail, at = await store.trail_with_position("t1")
    assert ([entry.operation for entry in trail], at) == (["debit"], 1)
    assert await store.trail_with_position("never") == ([], 1)
    assert await store.position() == 1

    # A recorded rejection is an entry like any other.
    unknown, _, after_rejection = await decided(store, "credit", "t2", "zed", 5)
    assert (unknown.rejection, after_rejection) == ("unknown_user", 2)

    # Neither a request left undecided, nor a reused key moves it.
    assert await store.execute_with_position("credit", "t3", "bob", 5, apply_new=False) == (None, 2)
    with pytest.raises(IdempotencyKeyReused):
        await store.execute_with_position("debit", "t1", "alice", 999)
    undone, _, after_undo = await decided(store, "compensate_debit", "t1", "alice", 100)
    assert (undone.outcome, after_undo) == ("reversed", 3)
    assert await store.position() == 3
    trail, at = await store.trail_with_position("t1")
    assert ([repr(entry) for entry in trail], at) == ([repr(entry) for entry in await store.trail("t1")], 3)
    assert [entry.operation for entry in trail] == ["debit", "compensate_debit"]

    # execute() is the same call without the position, and records the same way.
    credited = await store.execute("credit", "t4", "bob", 7)
    assert credited is not None
    assert await store.position() == 4


@pytest.mark.parametrize("store_name", sorted(STORES))
def test_the_position_grows_with_each_recorded_entry_and_not_with_replays_or_reads(
    store_name: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with STORES[store_name](ACCOUNTS, tmp_path) as store:
            await grows_with_entries_only(store)

    run(scenario())


def test_a_memory_ledger_reloaded_keeps_its_position_and_an_older_copy_answers_less() -> None:
    async def scenario() -> None:
        store = MemoryStore.create(ACCOUNTS)
        await store.execute("debit", "t1", "alice", 100)
        older = MemoryStore(store.ledger.reopened(), store.ledger_id)
        await store.execute("debit", "t2", "alice", 100)
        await store.execute("credit", "t2", "bob", 100)
        store.reload()
        assert await store.position() == 3
        assert await older.position() == 1
        assert older.ledger_id == store.ledger_id

    run(scenario())


def test_a_sqlite_file_reopened_keeps_its_position_and_a_restored_backup_answers_less(tmp_path: Path) -> None:
    path, backup = tmp_path / "ledger.db", tmp_path / "backup.db"

    async def scenario() -> None:
        store = await SqliteStore.open(path, ACCOUNTS)
        try:
            await store.execute("debit", "t1", "alice", 100)
            with sqlite3.connect(path) as source, sqlite3.connect(backup) as copy:
                source.backup(copy)
            await store.execute("debit", "t2", "alice", 100)
            await store.execute("credit", "t2", "bob", 100)
            assert await store.position() == 3
        finally:
            await store.close()

        reopened = await SqliteStore.open(path, ACCOUNTS)
        try:
            assert await reopened.position() == 3
        finally:
            await reopened.close()

        restored = await SqliteStore.open(backup, ACCOUNTS)
        try:
            assert await restored.position() == 1
            assert restored.ledger_id == store.ledger_id
            # The restored ledger numbers on from where its copy stopped.
            _, position = await restored.execute_with_position("debit", "t3", "alice", 1)
            assert position == 2
        finally:
            await restored.close()

    run(scenario())


@pytest.mark.skipif(shutil.which("pg_dump") is None or shutil.which("pg_restore") is None, reason="no pg_dump")
def test_a_postgres_ledger_reopened_keeps_its_position_and_a_restored_dump_answers_less(tmp_path: Path) -> None:
    dump = tmp_path / "ledger.dump"

    async def scenario() -> None:
        async with fresh_database_async("position") as dsn, fresh_database_async("restored") as restored_dsn:
            store = await PostgresStore.open(dsn, ACCOUNTS)
            try:
                await store.execute("debit", "t1", "alice", 100)
                await asyncio.to_thread(
                    subprocess.run, ["pg_dump", "--format=custom", f"--file={dump}", dsn], check=True
                )
                await store.execute("debit", "t2", "alice", 100)
                await store.execute("credit", "t2", "bob", 100)
                assert await store.position() == 3
            finally:
                await store.close()
            reopened = await PostgresStore.open(dsn, ACCOUNTS)
            try:
                assert await reopened.position() == 3
            finally:
                await reopened.close()
            await asyncio.to_thread(
                subprocess.run, ["pg_restore", "--no-owner", f"--dbname={restored_dsn}", str(dump)], check=True
            )

            restored = await PostgresStore.open(restored_dsn, ACCOUNTS)
            try:
                assert await restored.position() == 1
                assert restored.ledger_id == store.ledger_id
                _, position = await restored.execute_with_position("debit", "t3", "alice", 1)
                assert position == 2
            finally:
                await restored.close()

    run(scenario())


# -- over HTTP ---------------------------------------------------------------------


def test_the_contract_names_the_position_beside_every_ledger_id_required_on_every_success() -> None:
    contract = load_contract()
    answers = 0
    for path, item in contract["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                headers = resolve(contract, response).get("headers", {})
                if "Ledger-Id" not in headers:
                    continue
                answers += 1
                position = resolve(contract, headers.get("Ledger-Position"))
                assert position is not None, (method, path, status)
                assert position["required"] is status.startswith("2"), (method, path, status)
                assert position["schema"]["type"] == "integer"
                assert position["schema"]["minimum"] == 0
    assert answers > 7 * 5


def position_of(response: httpx.Response) -> int | None:
    value = response.headers.get("ledger-position")
    return None if value is None else int(value)


def test_every_answer_of_a_contract_operation_answers_the_position_after_its_own_write() -> None:
    store = MemoryStore.create(ACCOUNTS)
    settings = Settings(accounts=ACCOUNTS, credit_fault_rate=0.0, log_requests=False, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}

    def call(transaction_id: str, user_id: str = "alice", amount: int = 100) -> dict[str, Any]:
        request = ledger_call(transaction_id, user_id, amount)
        return {**request, "headers": {**request["headers"], **auth}}

    async def scenario() -> list[tuple[int, int | None]]:
        app = create_app(settings, store)
        read = {"transaction_id": "r", **auth}
        async with asgi_client(app) as client:
            answers = [
                await client.get("/accounts", headers=read),
                await client.post("/debit", **call("t1")),
                await client.post("/debit", **call("t1")),
                await client.get("/accounts/alice", headers=read),
                await client.get("/accounts/zed", headers=read),
                await client.get("/transactions/t1", headers=read),
                await client.post("/debit", **call("t2", amount=10**6)),
                await client.post("/credit", **call("t3", user_id="zed")),
                await client.post("/debit", **call("t1", amount=5)),
                await client.post("/debit", json={"user_id": "alice"}, headers={"transaction_id": "t4", **auth}),
                await client.post("/debit", content=b"x" * 70_000, headers={"transaction_id": "t5", **auth}),
                await client.post("/debit", json={"user_id": "alice", "amount": 1}, headers=auth),
                await client.get("/accounts", headers={"transaction_id": "r"}),
            ]
            return [(answer.status_code, position_of(answer)) for answer in answers]

    assert run(scenario()) == [
        (200, 0),  # nothing recorded yet
        (200, 1),  # the debit's own entry
        (200, 1),  # its replay
        (200, 1),
        (404, 1),
        (200, 1),
        (409, 2),  # a recorded rejection
        (404, 3),
        (422, 3),  # the key reused with another amount: nothing recorded
        (422, 3),  # a body without the amount
        (413, 3),
        (400, 3),  # no transaction_id
        (401, None),  # without the token, the ledger's progress is not told
    ]


def test_an_injected_fault_answers_the_position_and_the_replay_after_it_the_same() -> None:
    settings = Settings(
        accounts=ACCOUNTS, credit_fault_rate=0.0, credit_fault_after_commit_rate=1.0, log_requests=False
    )

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with asgi_client(create_app(settings)) as client:
            faulted = await client.post("/credit", **ledger_call("t1", user_id="bob"))
            replayed = await client.post("/credit", **ledger_call("t1", user_id="bob"))
            return faulted, replayed

    faulted, replayed = run(scenario())
    assert (faulted.status_code, faulted.json()["code"], position_of(faulted)) == (500, "injected_fault", 1)
    assert (replayed.status_code, replayed.headers["idempotent-replayed"], position_of(replayed)) == (200, "true", 1)


class FailingStore(MemoryStore):
    """A memory store whose ledger operations fail with ``error``; its position still answers."""

    def __init__(self, error: Exception) -> None:
        super().__init__(MemoryStore.create(ACCOUNTS).ledger)
        self.error = error

    async def execute_with_position(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def answer_from(store: MemoryStore) -> Callable[[], Coroutine[Any, Any, httpx.Response]]:
    async def call() -> httpx.Response:
        app = create_app(Settings(accounts=ACCOUNTS, log_requests=False), store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as client:
            return await client.post("/debit", **ledger_call("t1"))

    return call


def test_a_storage_failure_answers_503_without_a_position_and_an_unexpected_error_with_one() -> None:
    unavailable = run(answer_from(FailingStore(StorageUnavailable("the disk is gone")))())
    assert (unavailable.status_code, unavailable.json()["code"]) == (503, "storage_unavailable")
    assert "ledger-position" not in unavailable.headers
    assert unavailable.headers["ledger-id"]

    broken = run(answer_from(FailingStore(RuntimeError("a bug")))())
    assert (broken.status_code, broken.json()["code"]) == (500, "internal_error")
    assert position_of(broken) == 0
