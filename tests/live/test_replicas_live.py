"""A service given two URLs, one of them dead, against a live ``python -m server``: transfers, the CLI, recovery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from saga import AccountRef, Orchestrator, SagaRecord, SagaState, ServiceClients, SqliteSagaLog, services
from saga.drive import batch
from saga.logs import count_sagas
from tests.conftest import StartServer
from tests.support.cli import saga_cli
from tests.support.money import violations_after
from tests.support.ports import dead_url

BANK = {"alice": 50_000, "bob": 50_000, "carol": 50_000}


def test_a_batch_completes_through_a_live_url_behind_a_dead_one(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(BANK, credit_fault_rate=0.3, fault_seed=11)
    service = (dead_url(), server.url)

    async def run() -> batch.BatchReport:
        # Read through clients of its own, so that the orchestrator running the sagas finds the live URL for itself.
        async with ServiceClients() as reader:
            before = await services.snapshot(reader, [service])
        plan = batch.plan(batch.Workload(60, max_amount=2_000, seed=5), service, service, before)
        log = await SqliteSagaLog.open(tmp_path / "saga.db")
        try:
            async with Orchestrator(log, concurrency=8) as orchestrator:
                report = await batch.run(orchestrator, plan, [service], before=before)
            assert await violations_after(log, before) == []
            return report
        finally:
            await log.close()

    report = asyncio.run(run())
    assert report.violations == []
    assert report.pending == 0
    assert report.states[SagaState.COMPLETED] >= 50
    assert list(report.before) == [",".join(sorted(service))], "two URLs of one service are one service"
    attempts = [attempt for result in report.results for attempt in result.attempts]
    at_dead = [attempt for attempt in attempts if attempt.url == service[0]]
    assert at_dead, "the first requests went to the dead URL first"
    assert all(attempt.status is None and (attempt.error or "").startswith("unreachable") for attempt in at_dead)
    assert all(attempt.url == server.url for attempt in attempts if attempt.status is not None)
    failovers = [
        result
        for result in report.results
        if [(a.step, a.number, a.url) for a in result.attempts[:2]]
        == [("debit", 1, service[0]), ("debit", 1, server.url)]
    ]
    assert failovers, "a debit moved from the dead URL to the live one within its first attempt"
    assert all(result.attempts[1].status == 200 for result in failovers)


def test_the_cli_takes_a_comma_separated_url_list(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    dead = dead_url()
    db = tmp_path / "saga.db"
    urls = f"{dead},{server.url}"
    done = saga_cli("transfer", "--from", "alice", "--to", "bob", "--amount", "250", "--url", urls, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("COMPLETED")

    (saga,) = json.loads(saga_cli("list", "--db", str(db), "--json").stdout)
    assert saga["source"] == f"alice@{urls}"
    history = json.loads(saga_cli("show", saga["transaction_id"], "--db", str(db), "--json").stdout)["history"]
    requests = [(event["step"], event["url"], event["status"]) for event in history if event["kind"] == "attempt"]
    # The account check before the transfer already found the live URL, so the saga starts there.
    assert requests == [("debit", server.url, 200), ("credit", server.url, 200)]

    batch_run = saga_cli(
        "batch", "--source-url", urls, "--target-url", f"{server.url},{dead}", "--transfers", "20", "--seed", "1",
        "--db", str(tmp_path / "batch.db"), "--json",
    )  # fmt: skip
    assert batch_run.returncode == 0, batch_run.stderr
    summary = json.loads(batch_run.stdout.splitlines()[-1])
    assert (summary["transfers"], summary["pending"], summary["violations"]) == (20, 0, [])
    assert list(summary["balances_before"]) == [",".join(sorted([dead, server.url]))]


def test_recovery_sends_to_the_urls_stored_in_the_log(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    dead = dead_url()
    db = tmp_path / "saga.db"
    source, target = AccountRef((dead, server.url), "alice"), AccountRef((server.url, dead), "bob")

    async def crash_after_logging() -> None:
        # What an orchestrator killed right after logging a new saga leaves behind.
        log = await SqliteSagaLog.open(db)
        try:
            await log.create(
                SagaRecord("crashed-1", source, target, 300, created_at_ms=1, updated_at_ms=1), SagaState.DEBITING
            )
        finally:
            await log.close()

    asyncio.run(crash_after_logging())
    recovered = saga_cli("recover", "--db", str(db), "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert [(r["transaction_id"], r["state"]) for r in json.loads(recovered.stdout)["recovered"]] == [
        ("crashed-1", "COMPLETED")
    ]
    history = json.loads(saga_cli("show", "crashed-1", "--db", str(db), "--json").stdout)["history"]
    requests = [(event["step"], event["url"], event["status"]) for event in history if event["kind"] == "attempt"]
    assert requests == [("debit", dead, None), ("debit", server.url, 200), ("credit", server.url, 200)]

    async def balances() -> dict[str, int]:
        async with ServiceClients() as reader:
            return await services.balances(reader, server.url)

    assert asyncio.run(balances()) == {"alice": 700, "bob": 300}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--url", "http://127.0.0.1:1,,http://127.0.0.1:2"], "empty URL"),
        (["--url", "http://127.0.0.1:1,"], "empty URL"),
        (["--url", ""], "empty URL"),
        (["--url", "http://127.0.0.1:1,127.0.0.1:2"], "must start with http:// or https://"),
        (["--source-url", "http://a.test,http://b.test", "--target-url", "http://b.test,http://c.test"], "share a URL"),
        (["--source-url", "http://a.test", "--target-url", "http://b.test,"], "empty URL"),
    ],
)
def test_bad_url_lists_are_a_usage_error_before_anything_is_logged(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    db = tmp_path / "saga.db"
    run = saga_cli("transfer", "--from", "alice", "--to", "bob", "--amount", "5", *flags, "--db", str(db))
    assert run.returncode == 2
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert count_sagas(db) == 0


def test_the_same_account_behind_two_url_lists_is_refused(tmp_path: Path) -> None:
    run = saga_cli(
        "transfer", "--from", "alice", "--to", "alice", "--amount", "5",
        "--source-url", "http://a.test,http://b.test", "--target-url", "http://b.test,http://a.test",
        "--db", str(tmp_path / "saga.db"),
    )  # fmt: skip
    assert (run.returncode, run.stderr.strip()) == (2, "error: source and target are the same account")
