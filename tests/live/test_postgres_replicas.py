"""Two ``python -m server`` replicas on one PostgreSQL database: all serialisation is in the database.

And a saga given both replicas spreads its requests over them.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from saga import Orchestrator, SagaState, ServiceClients, SqliteSagaLog, services
from saga.drive import batch
from server.process import ServerProcess
from server.stores.postgres import SCHEMA
from tests.conftest import StartServer
from tests.support.metrics import scrape, value
from tests.support.money import violations_after


async def post_everywhere(urls: list[str], path: str, calls: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """Send every (transaction_id, body) at once, alternating between the replicas."""
    limits = httpx.Limits(max_connections=len(calls))
    clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in urls]
    try:
        return await asyncio.gather(
            *(
                clients[number % len(clients)].post(path, headers={"transaction_id": transaction_id}, json=body)
                for number, (transaction_id, body) in enumerate(calls)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


def two_replicas(start_server: StartServer, accounts: dict[str, int], dsn: str, **options: Any) -> list[ServerProcess]:
    return [
        start_server(accounts, extra_args=["--database", dsn, "--replica-id", name], **options) for name in ("r1", "r2")
    ]


def ledger_requests(replica: ServerProcess) -> int:
    """The debits, credits and compensations ``replica`` answered, by its own count."""
    samples = scrape(f"{replica.url}/metrics")
    operations = ("debit", "credit", "compensate_debit", "compensate_credit")
    return int(sum(value(samples, "accounts_requests_total", operation=operation) for operation in operations))


def test_two_hundred_copies_of_one_debit_across_two_replicas_apply_once(pg_dsn: str, start_server: StartServer) -> None:
    replicas = two_replicas(start_server, {"alice": 10_000}, pg_dsn)
    calls = [("one-debit", {"user_id": "alice", "amount": 250})] * 200
    answers = asyncio.run(post_everywhere([replica.url for replica in replicas], "/debit", calls))

    assert [response.status_code for response in answers] == [200] * 200
    assert {response.content for response in answers} == {answers[0].content}
    assert json.loads(answers[0].content)["balance"] == 9_750
    replayed = [response.headers.get("idempotent-replayed") == "true" for response in answers]
    assert replayed.count(False) == 1
    rows = asyncio.run(fetch(pg_dsn, "SELECT balance FROM accounts WHERE user_id = 'alice'"))
    assert rows[0]["balance"] == 9_750
    assert asyncio.run(fetch(pg_dsn, "SELECT count(*) AS entries FROM entries"))[0]["entries"] == 1


def test_concurrent_debits_of_one_account_across_two_replicas_never_overdraw(
    pg_dsn: str, start_server: StartServer
) -> None:
    balance, amount = 1_000, 30
    replicas = two_replicas(start_server, {"alice": balance}, pg_dsn)
    calls = [(f"debit-{number}", {"user_id": "alice", "amount": amount}) for number in range(100)]
    answers = asyncio.run(post_everywhere([replica.url for replica in replicas], "/debit", calls))

    statuses = [response.status_code for response in answers]
    assert set(statuses) <= {200, 409}, statuses
    assert {response.json()["code"] for response in answers if response.status_code == 409} == {"insufficient_funds"}
    assert statuses.count(200) == balance // amount
    rows = asyncio.run(fetch(pg_dsn, "SELECT balance FROM accounts WHERE user_id = 'alice'"))
    assert rows[0]["balance"] == balance - (balance // amount) * amount
    applied = asyncio.run(fetch(pg_dsn, "SELECT count(*) AS applied FROM entries WHERE outcome = 'applied'"))
    assert applied[0]["applied"] == balance // amount


def test_replicas_started_together_on_an_empty_database_both_come_up(pg_dsn: str, start_server: StartServer) -> None:
    accounts = {"alice": 500, "bob": 7}
    with ThreadPoolExecutor(max_workers=3) as pool:
        starts = [
            pool.submit(start_server, accounts, extra_args=["--database", pg_dsn, "--replica-id", f"r{number}"])
            for number in range(3)
        ]
        replicas = [start.result() for start in starts]
    for replica in replicas:
        listed = httpx.get(f"{replica.url}/accounts", headers={"transaction_id": "read"}, timeout=10)
        assert listed.json() == {
            "accounts": [
                {"user_id": "alice", "balance": 500, "opening_balance": 500},
                {"user_id": "bob", "balance": 7, "opening_balance": 7},
            ]
        }
    versions = asyncio.run(fetch(pg_dsn, "SELECT version FROM schema_version"))
    assert sorted(row["version"] for row in versions) == [migration.version for migration in SCHEMA.migrations()]


def test_a_batch_of_sagas_spreads_its_requests_over_both_replicas(
    pg_dsn: str, start_server: StartServer, tmp_path: Path
) -> None:
    accounts = {f"user-{number}": 50_000 for number in range(10)}
    # Faults make retries and compensations, whose requests are chosen like any other.
    replicas = two_replicas(start_server, accounts, pg_dsn, credit_fault_rate=0.1, fault_seed=3)
    service = tuple(replica.url for replica in replicas)

    async def run() -> batch.BatchReport:
        async with ServiceClients() as reader:
            before = await services.snapshot(reader, [service])
        plan = batch.plan(batch.Workload(300, max_amount=2_000, seed=7), service, service, before)
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            async with Orchestrator(log, concurrency=16) as orchestrator:
                report = await batch.run(orchestrator, plan, [service], before=before)
            assert await violations_after(log, before) == []
            return report
        finally:
            await log.close()

    report = asyncio.run(run())
    assert (report.violations, report.pending, report.money_conserved) == ([], 0, True)
    assert report.states[SagaState.COMPLETED] >= 250
    assert report.retries > 0
    answered = [ledger_requests(replica) for replica in replicas]
    assert sum(answered) == report.requests, "every request of the sagas reached one replica"
    shares = [count / sum(answered) for count in answered]
    assert all(0.3 <= share <= 0.7 for share in shares), answered
    assert {attempt.url for result in report.results for attempt in result.attempts} == set(service)
