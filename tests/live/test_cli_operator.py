"""cancel, retry and resolve from the command line, against real services and real logs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from saga.logs import open_log
from saga.records import AccountRef, Change, SagaRecord
from saga.service.process import TransfersProcess
from saga.states import SagaState
from server.process import ServerProcess
from tests.conftest import StartServer
from tests.support.cli import finish, saga_cli, start_saga

ACCOUNTS = {"alice": 10_000, "bob": 10_000}
HOUR_MS = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def balance(bank: ServerProcess, user_id: str) -> int:
    answer = httpx.get(f"{bank.url}/accounts/{user_id}", headers={"transaction_id": "read"})
    value = answer.json()["balance"]
    assert isinstance(value, int)
    return value


def record(tid: str, bank: ServerProcess, amount: int = 700, *, named: bool = False) -> SagaRecord:
    service = "bank" if named else None
    at = now_ms()
    return SagaRecord(
        tid,
        AccountRef(bank.url, "alice", service),
        AccountRef(bank.url, "bob", service),
        amount,
        created_at_ms=at,
        updated_at_ms=at,
    )


async def seed_waiting_compensation(db: str, saga: SagaRecord) -> None:
    """A saga whose debit the bank applied, left COMPENSATING by a run that then waited an hour before trying again."""
    log = await open_log(db)
    try:
        await log.submit(saga)
        (held,) = await log.claim("a-worker-that-gave-up", limit=1, lease_ms=10_000, now_ms=now_ms())
        change = Change(
            saga.transaction_id,
            now_ms(),
            SagaState.COMPENSATING,
            fence_credit=True,
            error="compensate_debit blocked: 409 reversal_exceeds_balance_limit",
            epoch=held.epoch,
            owner=held.owner,
        )
        await log.commit(change)
        await log.release(saga.transaction_id, held.epoch, not_before_ms=now_ms() + HOUR_MS)
    finally:
        await log.close()


async def seed(db: str, saga: SagaRecord, state: SagaState) -> None:
    log = await open_log(db)
    try:
        await log.submit(saga)
        if state is not SagaState.PENDING:
            (held,) = await log.claim(
                "a-worker", limit=1, lease_ms=10_000, now_ms=now_ms(), transaction_id=saga.transaction_id
            )
            await log.commit(Change(saga.transaction_id, now_ms(), state, epoch=held.epoch, owner=held.owner))
    finally:
        await log.close()


def debit_at(bank: ServerProcess, tid: str, amount: int) -> None:
    answer = httpx.post(
        f"{bank.url}/debit", headers={"transaction_id": tid}, json={"user_id": "alice", "amount": amount}
    )
    assert answer.status_code == 200, answer.text


def events(db: str, tid: str) -> list[dict[str, object]]:
    shown = saga_cli("events", tid, "--db", db, "--json")
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)["events"]
    assert isinstance(listed, list)
    return listed


def test_retry_on_a_sqlite_log_gives_a_waiting_debit_back_at_once_and_records_who_asked(
    start_server: StartServer, tmp_path: Path
) -> None:
    bank = start_server(ACCOUNTS, credit_fault_rate=0.0)
    db = str(tmp_path / "saga.db")
    debit_at(bank, "t-waiting", 700)
    asyncio.run(seed_waiting_compensation(db, record("t-waiting", bank)))
    assert balance(bank, "alice") == 9_300

    retried = saga_cli("retry", "t-waiting", "--db", db, "--reason", "INC-7: room made on the account")
    assert retried.returncode == 0, retried.stderr
    assert "retried: COMPENSATED" in retried.stderr
    assert retried.stdout.startswith("retry asked: COMPENSATED t-waiting")
    assert balance(bank, "alice") == 10_000
    assert balance(bank, "bob") == 10_000
    (action,) = [event for event in events(db, "t-waiting") if event["kind"] == "action"]
    assert action["action"] == "retry"
    assert action["reason"] == "INC-7: room made on the account"
    assert str(action["actor"]).startswith("cli:")


def test_cancel_on_a_sqlite_log_ends_an_unclaimed_transfer_and_asking_again_records_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    bank = start_server(ACCOUNTS)
    db = str(tmp_path / "saga.db")
    asyncio.run(seed(db, record("t-pending", bank), SagaState.PENDING))
    asyncio.run(seed(db, record("t-claimed", bank), SagaState.DEBITING))

    cancelled = saga_cli("cancel", "t-pending", "--db", db, "--reason", "customer withdrew", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert (json.loads(cancelled.stdout)["state"], json.loads(cancelled.stdout)["code"]) == ("CANCELLED", "cancelled")
    again = saga_cli("cancel", "t-pending", "--db", db, "--reason", "customer withdrew")
    assert again.returncode == 0, again.stderr
    assert "already, nothing recorded" in again.stdout
    assert [event["action"] for event in events(db, "t-pending") if event["kind"] == "action"] == ["cancel"]

    in_progress = saga_cli("cancel", "t-claimed", "--db", db, "--reason", "too late")
    assert in_progress.returncode == 1
    assert "transfer_in_progress" in in_progress.stderr
    assert [event for event in events(db, "t-claimed") if event["kind"] == "action"] == []

    recovered = saga_cli("recover", "--db", db, "--json")
    assert "t-pending" not in recovered.stdout, "a cancelled saga is never taken up"
    assert balance(bank, "alice") + balance(bank, "bob") == 20_000


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--reason", ""], "a reason of 1-500 characters"),
        (["--reason", "two\nlines"], "one line"),
        (["--reason", "x" * 501], "a reason of 1-500 characters"),
    ],
)
def test_an_action_without_a_one_line_reason_is_refused_with_exit_2(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    refused = saga_cli("cancel", "t-1", "--db", str(tmp_path / "saga.db"), *arguments)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert not (tmp_path / "saga.db").exists()


def test_resolve_through_the_service_needs_an_operator_token_and_is_in_the_timeline(
    start_server: StartServer, tmp_path: Path
) -> None:
    bank = start_server(ACCOUNTS)
    db = tmp_path / "saga.db"
    asyncio.run(seed(str(db), record("t-forgotten", bank, named=True), SagaState.NEEDS_ATTENTION))
    with TransfersProcess(
        {"bank": bank.url},
        db=db,
        api_tokens={"shop": "shop-secret"},
        operator_tokens={"olga": "olga-secret"},
    ) as service:
        arguments = ["resolve", "t-forgotten", "--api", service.url, "--resolution", "nothing_to_move"]
        as_caller = saga_cli(*arguments, "--reason", "looked", "--api-token", "shop-secret")
        assert as_caller.returncode == 2
        assert "403 operator_only" in as_caller.stderr

        resolved = saga_cli(*arguments, "--reason", "trails agree: nothing moved", "--api-token", "olga-secret")
        assert resolved.returncode == 0, resolved.stderr
        assert resolved.stdout.startswith("resolved: RESOLVED t-forgotten")
        shown = saga_cli("events", "t-forgotten", "--api", service.url, "--api-token", "shop-secret", "--json")
        actions = [event for event in json.loads(shown.stdout)["events"] if event["kind"] == "action"]
        assert [(a["action"], a["actor"], a["resolution"], a["reason"]) for a in actions] == [
            ("resolve", "olga", "nothing_to_move", "trails agree: nothing moved")
        ]


def test_a_submission_whose_deadline_passed_before_its_debit_fails_with_nothing_moved(
    start_server: StartServer, tmp_path: Path
) -> None:
    bank = start_server(ACCOUNTS)
    db = str(tmp_path / "saga.db")
    submitted = saga_cli(
        "submit", "--from", "alice", "--to", "bob", "--amount", "300", "--url", bank.url, "--db", db,
        "--deadline-seconds", "1",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    transaction_id = submitted.stdout.strip()
    time.sleep(1.2)
    recovered = saga_cli("recover", "--db", db)
    assert recovered.returncode == 0, recovered.stderr
    shown = json.loads(saga_cli("show", transaction_id, "--db", db, "--json").stdout)
    assert (shown["state"], shown["code"]) == ("FAILED", "deadline_exceeded")
    trail = httpx.get(f"{bank.url}/transactions/{transaction_id}", headers={"transaction_id": transaction_id})
    assert trail.status_code == 404 or trail.json()["entries"] == [], "no request may go out after the deadline"
    assert (balance(bank, "alice"), balance(bank, "bob")) == (10_000, 10_000)


def test_a_retry_on_a_postgresql_log_reaches_the_worker_at_once_without_waiting_for_its_poll(
    start_server: StartServer, pg_dsn: str
) -> None:
    bank = start_server(ACCOUNTS, credit_fault_rate=0.0)
    debit_at(bank, "t-waiting", 700)
    asyncio.run(seed_waiting_compensation(pg_dsn, record("t-waiting", bank)))
    worker = start_saga("worker", "--db", pg_dsn, "--poll-seconds", "60", "--worker-id", "w-1")
    try:
        time.sleep(3)  # the worker is listening, and leaves the waiting saga alone
        assert balance(bank, "alice") == 9_300
        asked_at = time.monotonic()
        retried = saga_cli("retry", "t-waiting", "--db", pg_dsn, "--reason", "room made")
        assert retried.returncode == 0, retried.stderr
        while balance(bank, "alice") != 10_000 and time.monotonic() - asked_at < 20:
            time.sleep(0.1)
        taken = time.monotonic() - asked_at
        assert balance(bank, "alice") == 10_000
        assert taken < 20, "the worker polls every 60 s: only the retry's notification can have woken it"
        shown = json.loads(saga_cli("show", "t-waiting", "--db", pg_dsn, "--json").stdout)
        assert shown["state"] == "COMPENSATED"
    finally:
        worker.terminate()
        finish(worker, timeout=30)
