"""A service whose ledger is replaced under a saga (a memory store restarted) stops the saga: NEEDS_ATTENTION."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from saga import AccountRef, Orchestrator, RetryPolicies, RetryPolicy, SagaState, SqliteSagaLog
from saga.run import TransferResult
from server.process import ServerProcess
from tests.conftest import StartServer
from tests.support.cli import saga_cli

BANK_A = {"alice": 10_000}
BANK_B = {"dave": 10_000}

#: Credits retried slowly and for long, so that the saga is still crediting when bank B restarts.
PATIENT = RetryPolicies(
    credit=RetryPolicy(maximum_attempts=200, initial_interval=0.05, maximum_interval=0.1, jitter=0.0)
)


async def credit_attempts_logged(db: Path, transaction_id: str) -> int:
    log = await SqliteSagaLog.open(db, create=False, exclusive=False)
    try:
        return sum(
            1
            for event in await log.history(transaction_id)
            if event.attempt is not None and event.attempt.step == "credit"
        )
    finally:
        await log.close()


async def until_credit_attempts(db: Path, transaction_id: str, count: int, saga: asyncio.Task[TransferResult]) -> None:
    for _ in range(1_500):
        if saga.done() or await credit_attempts_logged(db, transaction_id) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{transaction_id} logged fewer than {count} credit attempts in 30 s")


async def transfer_while_bank_b_restarts(db: Path, bank_a: ServerProcess, bank_b: ServerProcess) -> TransferResult:
    log = await SqliteSagaLog.open(db)
    try:
        async with Orchestrator(log, policies=PATIENT, new_id=lambda: "saga-1") as orchestrator:
            saga = asyncio.create_task(
                orchestrator.transfer(AccountRef(bank_a.url, "alice"), AccountRef(bank_b.url, "dave"), 700)
            )
            # The first answer from bank B's ledger is logged before the next
            # request; later attempts from that ledger ride with a later commit.
            await until_credit_attempts(db, "saga-1", 1, saga)
            await asyncio.to_thread(bank_b.restart_after_kill)
            return await saga
    finally:
        await log.close()


def test_a_saga_that_meets_a_new_ledger_stops_for_an_operator(start_server: StartServer, tmp_path: Path) -> None:
    bank_a = start_server(BANK_A)
    # Every new credit fails, so the saga keeps crediting until it meets the restarted bank.
    bank_b = start_server(BANK_B, credit_fault_rate=1.0)
    db = tmp_path / "saga.db"
    result = asyncio.run(transfer_while_bank_b_restarts(db, bank_a, bank_b))

    assert result.state is SagaState.NEEDS_ATTENTION
    assert result.error is not None
    assert bank_b.url in result.error
    # Attempts sent while bank B was down got no answer, so they name no ledger.
    ledgers = {attempt.ledger_id for attempt in result.attempts if attempt.step == "credit" and attempt.ledger_id}
    assert len(ledgers) == 2, "the log keeps the ledger each attempt was answered from"

    listed = json.loads(saga_cli("list", "--state", "NEEDS_ATTENTION", "--db", str(db), "--json").stdout)
    assert [saga["transaction_id"] for saga in listed] == ["saga-1"]
    # Terminal for automation: recovery leaves it and moves no money, and exits 3 for as long as it waits.
    recovered = saga_cli("recover", "--db", str(db), "--json")
    assert recovered.returncode == 3, recovered.stderr
    assert json.loads(recovered.stdout)["recovered"] == []
    assert [saga["transaction_id"] for saga in json.loads(recovered.stdout)["needs_attention"]] == ["saga-1"]
    shown = saga_cli("show", "saga-1", "--db", str(db), "--json")
    assert {
        event.get("ledger_id") for event in json.loads(shown.stdout)["history"] if event["kind"] == "attempt"
    } >= ledgers


def test_recovery_that_meets_a_new_ledger_exits_3_naming_the_service_and_the_saga(
    start_server: StartServer, tmp_path: Path
) -> None:
    bank_a = start_server(BANK_A)
    bank_b = start_server(BANK_B, credit_fault_rate=1.0)
    db = tmp_path / "saga.db"

    async def crash_while_crediting() -> None:
        log = await SqliteSagaLog.open(db)
        try:
            async with Orchestrator(log, policies=PATIENT, new_id=lambda: "saga-2") as orchestrator:
                saga = asyncio.create_task(
                    orchestrator.transfer(AccountRef(bank_a.url, "alice"), AccountRef(bank_b.url, "dave"), 300)
                )
                await until_credit_attempts(db, "saga-2", 1, saga)
                saga.cancel()  # the orchestrator dies here, mid-saga
                with pytest.raises(asyncio.CancelledError):
                    await saga
        finally:
            await log.close()

    asyncio.run(crash_while_crediting())
    bank_b.restart_after_kill()
    recovered = saga_cli("recover", "--db", str(db))
    assert recovered.returncode == 3
    assert "saga-2" in recovered.stderr
    assert bank_b.url in recovered.stderr
    listed = json.loads(saga_cli("list", "--state", "NEEDS_ATTENTION", "--db", str(db), "--json").stdout)
    assert [saga["transaction_id"] for saga in listed] == ["saga-2"]
