"""Transfers through the saga against live ``python -m server`` processes, judged by the services themselves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from saga import (
    AccountRef,
    Orchestrator,
    RetryPolicies,
    RetryPolicy,
    SagaState,
    ServiceClients,
    SqliteSagaLog,
    services,
)
from saga.drive import batch
from saga.logs import SagaLogError, count_sagas
from server.process import REPO_ROOT, ServerProcess
from tests.conftest import StartServer
from tests.support.cli import saga_cli
from tests.support.money import violations_after, violations_in

BANK_A = {"alice": 50_000, "bob": 50_000, "carol": 50_000}
BANK_B = {"dave": 50_000, "erin": 50_000, "frank": 50_000}


def two_banks(start_server: StartServer, **faults: float) -> tuple[ServerProcess, ServerProcess]:
    return start_server(BANK_A, fault_seed=1, **faults), start_server(BANK_B, fault_seed=2, **faults)


async def run_batch(
    db: Path,
    source_url: str,
    target_url: str,
    *,
    transfers: int,
    policies: RetryPolicies | None = None,
    seed: int = 7,
) -> batch.BatchReport:
    log = await SqliteSagaLog.open(db)
    try:
        async with Orchestrator(log, policies=policies, concurrency=16) as orchestrator:
            before = await services.snapshot(orchestrator.clients, [source_url, target_url], orchestrator.watch)
            plan = batch.plan(batch.Workload(transfers, max_amount=2_000, seed=seed), source_url, target_url, before)
            report = await batch.run(orchestrator, plan, [source_url, target_url], before=before)
        assert await violations_after(log, before) == []
        return report
    finally:
        await log.close()


def test_default_faults_one_service(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(BANK_A, credit_fault_rate=0.3, fault_seed=3)
    report = asyncio.run(run_batch(tmp_path / "saga.db", server.url, server.url, transfers=150))
    assert report.violations == []
    assert report.pending == 0
    assert report.retries > 0, "30% faults must have caused retries"
    assert report.states[SagaState.COMPLETED] >= 120
    injected = sum(1 for result in report.results for attempt in result.attempts if attempt.code == "injected_fault")
    assert injected > 0


def test_default_faults_two_services(start_server: StartServer, tmp_path: Path) -> None:
    bank_a, bank_b = two_banks(start_server, credit_fault_rate=0.3)
    report = asyncio.run(run_batch(tmp_path / "saga.db", bank_a.url, bank_b.url, transfers=150))
    assert report.violations == []
    assert sum(report.after[bank_b.url].values()) - sum(report.before[bank_b.url].values()) == sum(
        result.amount for result in report.results if result.state is SagaState.COMPLETED
    )


def test_lost_responses_two_services(start_server: StartServer, tmp_path: Path) -> None:
    bank_a, bank_b = two_banks(start_server, credit_fault_rate=0.3, credit_fault_after_commit_rate=0.3)
    report = asyncio.run(run_batch(tmp_path / "saga.db", bank_a.url, bank_b.url, transfers=150))
    assert report.violations == []
    replayed_after_loss = [
        result
        for result in report.results
        if [attempt.status for attempt in result.attempts if attempt.step == "credit"][-1:] == [200]
        and any(attempt.code == "injected_fault" for attempt in result.attempts)
    ]
    assert replayed_after_loss, "some credits must have succeeded on retry after a 500"


@pytest.mark.parametrize("after_commit_rate", [0.0, 0.5])
def test_one_credit_attempt_forces_the_compensation_path(
    start_server: StartServer, tmp_path: Path, after_commit_rate: float
) -> None:
    bank_a, bank_b = two_banks(start_server, credit_fault_rate=0.3, credit_fault_after_commit_rate=after_commit_rate)
    policies = RetryPolicies(credit=RetryPolicy(maximum_attempts=1))
    report = asyncio.run(run_batch(tmp_path / "saga.db", bank_a.url, bank_b.url, transfers=120, policies=policies))
    assert report.violations == []
    compensated = [result for result in report.results if result.state is SagaState.COMPENSATED]
    assert len(compensated) >= 10
    for result in compensated:
        steps = [attempt.step for attempt in result.attempts]
        assert steps.index("compensate_credit") < steps.index("compensate_debit"), "the credit is fenced first"
    if after_commit_rate:
        landed = [result for result in report.results if result.state is SagaState.COMPLETED and result.compensated]
        reversed_credits = [
            result
            for result in compensated
            if any(attempt.step == "compensate_credit" and attempt.status == 200 for attempt in result.attempts)
        ]
        assert landed or reversed_credits, "lost responses must have reached compensation"


def test_insufficient_funds_fails_without_moving_money(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"poor": 10, "rich": 0}, credit_fault_rate=0.0)

    async def scenario() -> None:
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            async with Orchestrator(log) as orchestrator:
                result = await orchestrator.transfer(AccountRef(server.url, "poor"), AccountRef(server.url, "rich"), 11)
                assert result.state is SagaState.FAILED
                assert [(a.step, a.status, a.code) for a in result.attempts] == [("debit", 409, "insufficient_funds")]
                balances = await services.balances(orchestrator.clients, server.url, orchestrator.watch)
                assert balances == {"poor": 10, "rich": 0}
        finally:
            await log.close()

    asyncio.run(scenario())


def logged_sagas(db: Path) -> int:
    try:
        return count_sagas(db)
    except SagaLogError:
        # The batch has created the file but not the schema yet.
        return 0


@pytest.mark.parametrize("services_count", [1, 2])
def test_kill_minus_nine_mid_batch_then_recover(start_server: StartServer, tmp_path: Path, services_count: int) -> None:
    bank_a = start_server(BANK_A, credit_fault_rate=0.3, credit_fault_after_commit_rate=0.1, fault_seed=5)
    bank_b = start_server(BANK_B, credit_fault_rate=0.3, fault_seed=6) if services_count == 2 else bank_a
    db = tmp_path / "saga.db"
    before = asyncio.run(_snapshot([bank_a.url, bank_b.url]))
    urls = ["--url", bank_a.url] if services_count == 1 else ["--source-url", bank_a.url, "--target-url", bank_b.url]
    batch_process = subprocess.Popen(
        [sys.executable, "-m", "saga", "batch", *urls, "--db", str(db), "--transfers", "3000", "--concurrency", "32"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while logged_sagas(db) < 200 and time.monotonic() < deadline and batch_process.poll() is None:
            time.sleep(0.02)
        assert batch_process.poll() is None, "the batch must still be running when it is killed"
        os.kill(batch_process.pid, signal.SIGKILL)
    finally:
        batch_process.kill()
        batch_process.wait()

    listed = json.loads(saga_cli("list", "--db", str(db), "--json").stdout)
    unfinished_before = [saga for saga in listed if saga["state"] not in ("COMPLETED", "COMPENSATED", "FAILED")]
    assert unfinished_before, "a kill mid-run leaves sagas in flight"

    recovered = saga_cli("recover", "--db", str(db), "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert len(json.loads(recovered.stdout)["recovered"]) == len(unfinished_before)

    states = Counter(saga["state"] for saga in json.loads(saga_cli("list", "--db", str(db), "--json").stdout))
    assert set(states) <= {"COMPLETED", "COMPENSATED", "FAILED"}

    assert violations_in(db, before) == []


async def _snapshot(urls: list[str]) -> dict[str, dict[str, int]]:
    async with ServiceClients() as reader:
        return await services.snapshot(reader, urls)
