"""The PostgreSQL store against a real PostgreSQL server: one fresh database per test."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from server.ledger import MAX_BALANCE, IdempotencyKeyReused
from server.process import REPO_ROOT
from server.stores import StoreError
from server.stores.postgres import SCHEMA, PostgresStore
from tests.conftest import StartServer
from tests.support.aio import run
from tests.support.schemas import LEDGER_POSTGRESQL, create_postgres

T = TypeVar("T")


@asynccontextmanager
async def opened(dsn: str, accounts: Mapping[str, int], **options: Any) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(dsn, accounts, **options)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def admin(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


def answer(execution: Any) -> tuple[Any, ...]:
    entry, replayed = execution
    return (entry.status, entry.rejection, entry.outcome, entry.amount, entry.balance, replayed)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- persistence and replays -----------------------------------------------------


def test_balances_and_entries_survive_close_and_reopen(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 1_000, "bob": 0}) as store:
            first = await store.execute("debit", "t1", "alice", 300)
            assert first is not None
            await store.execute("credit", "t1", "bob", 300)
        # Other opening balances at restart: existing accounts keep theirs.
        async with opened(pg_dsn, {"alice": 5, "bob": 5, "carol": 70}) as store:
            assert [(account.user_id, account.balance) for account in await store.accounts()] == [
                ("alice", 700),
                ("bob", 300),
                ("carol", 70),
            ]
            replay = await store.execute("debit", "t1", "alice", 300)
            assert replay is not None
            assert answer(replay) == (200, None, "applied", 300, 700, True)
            assert replay[0].sequence == first[0].sequence
            assert [entry.operation for entry in await store.trail("t1")] == ["debit", "credit"]
            await store.check_invariants()

    run(scenario())


def test_a_replay_answers_exactly_what_was_first_answered(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100}) as store:
            refused = await store.execute("debit", "t1", "alice", 500)
            await store.execute("credit", "t2", "alice", 1_000)
            # The account could pay now, but the recorded refusal is what a retry gets.
            assert answer(await store.execute("debit", "t1", "alice", 500)) == (*answer(refused)[:-1], True)
            assert answer(refused) == (409, "insufficient_funds", None, 500, None, False)
            with pytest.raises(IdempotencyKeyReused):
                await store.execute("debit", "t1", "alice", 501)
            with pytest.raises(IdempotencyKeyReused):
                await store.execute("debit", "t1", "bob", 500)
            assert await store.balance("alice") == 1_100

    run(scenario())


def test_a_new_request_with_apply_new_false_is_neither_decided_nor_recorded(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100}) as store:
            assert await store.execute("credit", "t1", "alice", 5, apply_new=False) is None
            assert await store.trail("t1") == []
            applied = await store.execute("credit", "t1", "alice", 5)
            assert applied is not None
            replay = await store.execute("credit", "t1", "alice", 5, apply_new=False)
            assert replay is not None
            assert answer(replay) == (200, None, "applied", 5, 105, True)

    run(scenario())


# -- the rules -------------------------------------------------------------------


def test_a_debit_or_credit_after_its_own_compensation_is_fenced(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100, "bob": 100}) as store:
            voided = await store.execute("compensate_debit", "t1", "alice", 10)
            assert answer(voided) == (200, None, "voided", 10, 100, False)
            late_debit = await store.execute("debit", "t1", "alice", 10)
            assert answer(late_debit) == (409, "transaction_compensated", None, 10, None, False)

            await store.execute("compensate_credit", "t2", "bob", 10)
            late_credit = await store.execute("credit", "t2", "bob", 10)
            assert answer(late_credit) == (409, "transaction_compensated", None, 10, None, False)
            assert [(account.user_id, account.balance) for account in await store.accounts()] == [
                ("alice", 100),
                ("bob", 100),
            ]

    run(scenario())


def test_compensations_reverse_the_recorded_amount_and_refuse_what_would_break_a_rule(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100, "bob": 0, "full": 50}, max_balance=100) as store:
            await store.execute("debit", "t1", "alice", 30)
            await store.execute("credit", "t1", "bob", 30)
            completed = await store.execute("compensate_debit", "t1", "alice", 30)
            assert answer(completed) == (409, "transfer_completed", None, 30, None, False)
            with pytest.raises(IdempotencyKeyReused):
                await store.execute("compensate_credit", "t1", "bob", 31)
            # The service said the transfer completed: the credit stands with the debit.
            kept_credit = await store.execute("compensate_credit", "t1", "bob", 30)
            assert answer(kept_credit) == (409, "transfer_completed", None, 30, None, False)

            # The other order: the credit reversed first, then the debit given back.
            await store.execute("debit", "t6", "alice", 20)
            await store.execute("credit", "t6", "bob", 20)
            reversed_credit = await store.execute("compensate_credit", "t6", "bob", 20)
            assert answer(reversed_credit) == (200, None, "reversed", 20, 30, False)
            reversed_debit = await store.execute("compensate_debit", "t6", "alice", 20)
            assert answer(reversed_debit) == (200, None, "reversed", 20, 70, False)

            await store.execute("debit", "t2", "full", 40)
            await store.execute("credit", "t3", "full", 90)
            beyond = await store.execute("compensate_debit", "t2", "full", 40)
            assert answer(beyond) == (409, "reversal_exceeds_balance_limit", None, 40, None, False)
            # Not recorded: the same request is decided afresh, and gives the debit back once there is room.
            assert [entry.operation for entry in await store.trail("t2")] == ["debit"]
            await store.execute("debit", "t7", "full", 40)
            given_back = await store.execute("compensate_debit", "t2", "full", 40)
            assert answer(given_back) == (200, None, "reversed", 40, 100, False)
            over = await store.execute("credit", "t4", "full", 1)
            assert answer(over) == (409, "balance_limit_exceeded", None, 1, None, False)

            unknown = await store.execute("credit", "t5", "nobody", 1)
            assert answer(unknown) == (404, "unknown_user", None, 1, None, False)
            assert [entry.user_id for entry in await store.trail("t5")] == ["nobody"]
            await store.check_invariants()

    run(scenario())


# -- what the database itself enforces -------------------------------------------


def test_the_database_refuses_a_duplicate_entry_and_a_balance_out_of_range(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100}) as store:
            await store.execute("debit", "t1", "alice", 10)
        async with admin(pg_dsn) as connection:
            with pytest.raises(asyncpg.UniqueViolationError):
                await connection.execute(
                    "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance) "
                    "VALUES ('t1', 'debit', 'alice', 10, 'applied', 80)"
                )
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute("UPDATE accounts SET balance = -1 WHERE user_id = 'alice'")
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute("UPDATE accounts SET balance = $1 WHERE user_id = 'alice'", MAX_BALANCE + 1)
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(
                    "INSERT INTO entries (transaction_id, operation, user_id, amount, outcome, balance, rejection) "
                    "VALUES ('t2', 'debit', 'alice', 10, 'applied', 80, 'insufficient_funds')"
                )
            assert await connection.fetchval("SELECT balance FROM accounts WHERE user_id = 'alice'") == 90

    run(scenario())


def test_check_invariants_sees_a_balance_changed_behind_the_ledger(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100}) as store:
            await store.execute("debit", "t1", "alice", 10)
            await store.check_invariants()
            async with admin(pg_dsn) as connection:
                await connection.execute("UPDATE accounts SET balance = 95 WHERE user_id = 'alice'")
            with pytest.raises(AssertionError, match="'alice' is 95, but the entries say 90"):
                await store.check_invariants()

    run(scenario())


# -- opening -----------------------------------------------------------------------


def test_a_database_at_version_1_is_migrated_to_give_a_debit_back_once_there_is_room(pg_dsn: str) -> None:
    async def scenario() -> None:
        # A database as version 1 left it, where a reversal refused for want of room was recorded for good.
        (at_version_1,) = [earlier for earlier in LEDGER_POSTGRESQL if earlier.name == "1@0f8d867"]
        await create_postgres(pg_dsn, at_version_1)
        async with opened(pg_dsn, {"full": 50}, max_balance=100) as store:
            await store.execute("debit", "t1", "full", 40)
            await store.execute("credit", "t2", "full", 90)
            refused = await store.execute("compensate_debit", "t1", "full", 40)
            assert answer(refused) == (409, "reversal_exceeds_balance_limit", None, 40, None, False)
            await store.execute("debit", "t3", "full", 40)
            given_back = await store.execute("compensate_debit", "t1", "full", 40)
            assert answer(given_back) == (200, None, "reversed", 40, 100, False)
            await store.check_invariants()
        async with admin(pg_dsn) as connection:
            versions = await connection.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [row["version"] for row in versions] == [migration.version for migration in SCHEMA.migrations()]

    run(scenario())


def test_a_schema_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    async def scenario() -> None:
        async with opened(pg_dsn, {"alice": 100}):
            pass
        async with admin(pg_dsn) as connection:
            await connection.execute("INSERT INTO schema_version (version, name) VALUES (99, 'from_the_future')")
        latest = len(SCHEMA.migrations())
        with pytest.raises(StoreError, match=f"version 99, newer than this code's {latest}") as refused:
            await PostgresStore.open(pg_dsn, {"alice": 100})
        assert "\n" not in str(refused.value)

    run(scenario())


def test_an_unreachable_server_is_a_one_line_store_error() -> None:
    dsn = f"postgresql://postgres:secret@127.0.0.1:{closed_port()}/ledger"
    with pytest.raises(StoreError, match="cannot open the PostgreSQL store") as refused:
        run(PostgresStore.open(dsn, {"alice": 1}))
    assert "\n" not in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_role_that_does_not_exist_is_a_one_line_store_error(pg_dsn: str) -> None:
    dsn = pg_dsn.replace("postgres@", "no_such_role_here@", 1)
    assert dsn != pg_dsn
    with pytest.raises(StoreError, match="no_such_role_here") as refused:
        run(PostgresStore.open(dsn, {"alice": 1}))
    assert "\n" not in str(refused.value)


def test_python_m_server_says_one_line_and_exits_non_zero_when_the_database_is_unreachable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "--database", f"postgresql://postgres@127.0.0.1:{closed_port()}/ledger"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: cannot open the PostgreSQL store at postgresql://")
    assert "Traceback" not in done.stderr


# -- the database going away mid-operation -----------------------------------------


def test_a_database_lost_mid_operation_answers_503_and_applies_nothing(pg_dsn: str, start_server: StartServer) -> None:
    server = start_server({"alice": 1_000}, extra_args=["--database", pg_dsn])
    headers, body = {"transaction_id": "t1"}, {"user_id": "alice", "amount": 100}

    async def scenario() -> None:
        async with admin(pg_dsn) as blocker, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # Hold alice's row, so the debit is inside its transaction, waiting, when its connection dies.
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("SELECT 1 FROM accounts WHERE user_id = 'alice' FOR UPDATE")
            debit = asyncio.ensure_future(client.post("/debit", headers=headers, json=body))
            waiting: list[int] = []
            deadline = time.monotonic() + 10
            while not waiting and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                waiting = [
                    row["pid"]
                    for row in await blocker.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                    )
                ]
            assert waiting, "the debit never waited for the row lock"
            for pid in waiting:
                await blocker.execute("SELECT pg_terminate_backend($1)", pid)
            answered = await debit
            assert answered.status_code == 503
            assert answered.json()["code"] == "storage_unavailable"
            assert answered.headers["retry-after"]
            await blocking.rollback()

            assert await blocker.fetchval("SELECT balance FROM accounts WHERE user_id = 'alice'") == 1_000
            assert await blocker.fetchval("SELECT count(*) FROM entries") == 0
            # The pool replaces the lost connection: the retry is applied, once.
            retried = await client.post("/debit", headers=headers, json=body)
            assert (retried.status_code, retried.json()["balance"]) == (200, 900)
            assert "idempotent-replayed" not in retried.headers

    run(scenario())


def test_backends_terminated_under_load_answer_503_never_500_and_the_service_recovers(
    pg_dsn: str, start_server: StartServer
) -> None:
    users = [f"u{number}" for number in range(8)]
    opening = 1_000_000
    server = start_server(dict.fromkeys(users, opening), extra_args=["--database", pg_dsn])
    sent: list[tuple[str, str, str, int]] = []  # (transaction_id, operation, user_id, amount)
    answers: list[tuple[int, str | None, str | None]] = []  # (status, code, retry-after) per answered request
    answered_200: set[str] = set()
    transport_errors: list[str] = []
    terminated: list[int] = []

    async def client(number: int, until: float) -> None:
        user = users[number]
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            attempt = 0
            while time.monotonic() < until:
                attempt += 1
                operation = "debit" if attempt % 2 else "credit"
                transaction_id, amount = f"c{number}-{attempt}", 1 + attempt % 7
                sent.append((transaction_id, operation, user, amount))
                body = {"user_id": user, "amount": amount}
                try:
                    response = await http.post(f"/{operation}", headers={"transaction_id": transaction_id}, json=body)
                except httpx.HTTPError as error:
                    transport_errors.append(repr(error))
                    continue
                code = response.json().get("code") if response.status_code != 200 else None
                answers.append((response.status_code, code, response.headers.get("retry-after")))
                if response.status_code == 200:
                    answered_200.add(transaction_id)

    async def terminator(until: float) -> None:
        async with admin(pg_dsn) as connection:
            database = await connection.fetchval("SELECT current_database()")
            while time.monotonic() < until:
                await asyncio.sleep(0.2)
                ended = await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
                terminated.append(len(ended))

    async def trails(transaction_ids: list[str]) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

            async def trail(transaction_id: str) -> dict[str, Any]:
                response = await http.get(f"/transactions/{transaction_id}", headers={"transaction_id": "audit"})
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            found: list[dict[str, Any]] = []
            for start in range(0, len(transaction_ids), 64):
                found += await asyncio.gather(*(trail(tid) for tid in transaction_ids[start : start + 64]))
            return found

    async def scenario() -> None:
        until = time.monotonic() + 5
        await asyncio.gather(terminator(until), *(client(number, until) for number in range(8)))

        statuses = {status for status, _, _ in answers}
        assert 500 not in statuses, [answer for answer in answers if answer[0] == 500][:5]
        assert statuses <= {200, 503} | set(range(400, 500)), statuses
        unavailable = [answer for answer in answers if answer[0] == 503]
        assert all(code == "storage_unavailable" and retry_after for _, code, retry_after in unavailable)
        assert transport_errors == [], transport_errors[:5]
        # The load met the terminations: some answers were 503, and most still went through.
        assert sum(terminated) > 0
        assert unavailable, "no request ever met a terminated backend"
        assert statuses & {200}

        # Past the last termination (and the moment it takes the server to read
        # it off its sockets), every request is answered as if nothing happened.
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            for number in range(20):
                transaction_id, user = f"after-{number}", users[number % len(users)]
                body = {"user_id": user, "amount": 1}
                after = await http.post("/debit", headers={"transaction_id": transaction_id}, json=body)
                assert after.status_code == 200, after.text
                sent.append((transaction_id, "debit", user, 1))
                answered_200.add(transaction_id)
            accounts = await http.get("/accounts", headers={"transaction_id": "audit"})
            assert accounts.status_code == 200
            total = sum(account["balance"] for account in accounts.json()["accounts"])

        # Every request applied at most once, whatever its answer was, every 200
        # applied exactly once, and the trails account for every unit of money that moved.
        moved = 0
        for (transaction_id, operation, user, amount), found in zip(
            sent, await trails([tid for tid, *_ in sent]), strict=True
        ):
            applied = [entry for entry in found["entries"] if entry.get("outcome") == "applied"]
            assert len(applied) <= 1, found
            assert len(applied) == 1 or transaction_id not in answered_200, found
            for entry in applied:
                assert (entry["operation"], entry["user_id"], entry["amount"]) == (operation, user, amount)
                moved += amount if operation == "credit" else -amount
        assert total == opening * len(users) + moved

    run(scenario())
    log = server.log()
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if "storage unavailable on" in line]
    assert len(warnings) == sum(1 for status, _, _ in answers if status == 503)
