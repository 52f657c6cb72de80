"""``python -m saga`` when its saga log or a service fails mid-run: a summary, one line saying what failed, exit 1.

A full disk is made with RLIMIT_FSIZE set on the running process (every
write past the first byte of a file then fails, as on a full disk); a
PostgreSQL outage by terminating the log's backends in a loop. Nothing may
end in a traceback, and nothing recorded may be lost: recovery finishes it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from evaluation.scratch_database import server_dsn
from saga.logs import SagaLogError, SqliteSagaLog, count_sagas
from saga.logs.postgres import PostgresSagaLog
from saga.records import AccountRef, Change, SagaRecord
from saga.states import SagaState
from saga.submission import submit
from tests.conftest import StartServer
from tests.support.cli import finish, saga_cli, start_saga
from tests.support.proxy import DelayingProxy

BANK = {f"user{n}": 1_000_000 for n in range(6)}
TOTAL = sum(BANK.values())


def until(condition: Callable[[], bool], process: subprocess.Popen[str], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {what} within {within:g} s"
        time.sleep(0.02)


def sagas_in(db: Path) -> int:
    try:
        return count_sagas(db)
    except SagaLogError:
        return 0


def fill_the_disk(process: subprocess.Popen[str]) -> None:
    """From now on every write of ``process`` past a file's first byte fails, as on a full disk."""
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (1, 1))


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def balances_total(url: str) -> int:
    import urllib.request

    request = urllib.request.Request(f"{url}/accounts", headers={"transaction_id": "test-read"})
    listed = json.loads(urllib.request.urlopen(request, timeout=10).read())
    return sum(account["balance"] for account in listed["accounts"])


def every_saga_ended(db: str | Path) -> None:
    listed = saga_cli("list", "--db", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    states = {saga["state"] for saga in json.loads(listed.stdout)}
    assert states <= {"COMPLETED", "COMPENSATED", "FAILED"}, states


# -- a full disk under the SQLite log ----------------------------------------------------


def test_a_batch_whose_log_fills_the_disk_mid_run_ends_with_its_summary_and_recovery_loses_nothing(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(BANK)
    db = tmp_path / "saga.db"
    with DelayingProxy(server.port, delay=0.2) as slow:
        batch = start_saga(
            "batch", "--url", slow.url, "--transfers", "200", "--concurrency", "8", "--db", str(db), "--json"
        )
        until(lambda: sagas_in(db) >= 16, batch, "sixteen sagas logged")
        fill_the_disk(batch)
        out, err = finish(batch)
        # The sagas name the proxy's URL: recovery goes through it too.
        recovered = saga_cli("recover", "--db", str(db), "--json")
    assert batch.returncode == 1, err
    line = one_error_line(err)
    summary = json.loads(out.splitlines()[-1])
    assert summary["failure"] is not None
    assert summary["failure"] in line
    assert "saga log" in line
    assert summary["interrupted"] >= 1
    assert summary["transfers"] + summary["interrupted"] + summary["not_started"] == 200
    assert summary["not_started"] > 0, "no transfer is started once the log has failed"
    assert summary["invariants_checked"] is False
    assert "invariants" in err, "the summary table is printed too"
    assert recovered.returncode == 0, recovered.stderr
    every_saga_ended(db)
    assert balances_total(server.url) == TOTAL


def test_a_transfer_whose_log_fills_the_disk_mid_saga_names_its_saga_and_exits_1(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(BANK)
    db = tmp_path / "saga.db"
    with DelayingProxy(server.port, delay=1.0, hold_answers=True) as slow:
        transfer = start_saga(
            "transfer", "--from", "user1", "--to", "user2", "--amount", "300", "--url", slow.url,
            "--db", str(db), "--json",
        )  # fmt: skip
        until(lambda: slow.held >= 1, transfer, "the debit sent")
        fill_the_disk(transfer)
        out, err = finish(transfer)
        recovered = saga_cli("recover", "--db", str(db), "--json")
    assert transfer.returncode == 1, err
    line = one_error_line(err)
    shown = json.loads(out.splitlines()[-1])
    assert shown["interrupted"] is True
    assert shown["state"] is None
    assert shown["transaction_id"] in line
    assert "saga log" in line
    assert recovered.returncode == 0, recovered.stderr
    assert [result["transaction_id"] for result in json.loads(recovered.stdout)["recovered"]] == [
        shown["transaction_id"]
    ]
    every_saga_ended(db)
    assert balances_total(server.url) == TOTAL


def test_a_recovery_whose_log_fills_the_disk_reports_what_it_could_not_finish(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(BANK)
    db = tmp_path / "saga.db"
    with DelayingProxy(server.port, delay=1.0, hold_answers=True) as slow:
        ids = asyncio.run(unfinished_sagas(db, slow.url, 3))
        recovery = start_saga("recover", "--db", str(db), "--json")
        until(lambda: slow.held >= 1, recovery, "a debit sent")
        fill_the_disk(recovery)
        out, err = finish(recovery)
        again = saga_cli("recover", "--db", str(db), "--json")
    assert recovery.returncode == 1, err
    line = one_error_line(err)
    outcome = json.loads(out.splitlines()[-1])
    assert outcome["failure"] in line
    assert {failed["transaction_id"] for failed in outcome["failed"]} <= set(ids)
    assert outcome["failed"], "the sagas the log failed under are named"
    assert again.returncode == 0, again.stderr
    every_saga_ended(db)
    assert balances_total(server.url) == TOTAL


async def unfinished_sagas(db: Path, url: str, count: int) -> list[str]:
    """``count`` sagas logged in DEBITING, as a process that crashed before its first request leaves them."""
    log = await SqliteSagaLog.open(db)
    try:
        ids = []
        for n in range(count):
            record = SagaRecord(f"left-{n}", AccountRef(url, "user1"), AccountRef(url, "user2"), 10 + n)
            await log.create(record, SagaState.DEBITING)
            ids.append(record.transaction_id)
        return ids
    finally:
        await log.close()


# -- a PostgreSQL log whose backends are terminated ---------------------------------------


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def terminate_backends_while(
    dsn: str, running: Callable[[], bool], *, after_sagas: int, which: str = "true"
) -> int:
    """Once the log holds ``after_sagas`` sagas (``which`` of them), terminate its backends until ``running`` ends."""
    admin = await asyncpg.connect(server_dsn(), timeout=10)
    terminated = 0
    try:
        reader = await asyncpg.connect(dsn, timeout=10)
        try:
            while running():
                try:
                    if await reader.fetchval(f"SELECT count(*) FROM saga_sagas WHERE {which}") >= after_sagas:
                        break
                except asyncpg.UndefinedTableError:
                    pass
                await asyncio.sleep(0.02)
        finally:
            await reader.close()
        while running():
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database_of(dsn),
            )
            terminated += len(rows)
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    return terminated


def test_a_batch_on_a_postgresql_log_whose_backends_are_terminated_ends_with_its_summary(
    start_server: StartServer, pg_dsn: str
) -> None:
    server = start_server(BANK)
    with DelayingProxy(server.port, delay=0.05) as slow:
        batch = start_saga(
            "batch", "--url", slow.url, "--transfers", "400", "--concurrency", "16", "--db", pg_dsn, "--json"
        )
        try:
            terminated = asyncio.run(terminate_backends_while(pg_dsn, lambda: batch.poll() is None, after_sagas=20))
        finally:
            out, err = finish(batch)
    assert terminated > 0
    assert batch.returncode == 1, err
    line = one_error_line(err)
    summary = json.loads(out.splitlines()[-1])
    assert summary["failure"] in line
    assert "saga log" in line
    assert summary["transfers"] + summary["interrupted"] + summary["not_started"] == 400


def test_a_worker_whose_postgresql_backends_are_terminated_keeps_going_and_stops_with_its_summary(
    start_server: StartServer, pg_dsn: str
) -> None:
    server = start_server(BANK)
    asyncio.run(submitted_on(pg_dsn, server.url, 60))
    worker = start_saga("worker", "--db", pg_dsn, "--poll-seconds", "0.1", "--concurrency", "4")
    try:
        until_time = time.monotonic() + 4
        terminated = asyncio.run(
            terminate_backends_while(
                pg_dsn,
                lambda: worker.poll() is None and time.monotonic() < until_time,
                after_sagas=1,
                which="owner IS NOT NULL",
            )
        )
        assert worker.poll() is None, "an outage of the log pauses a worker, never ends it"
        worker.send_signal(signal.SIGTERM)
    finally:
        _, err = finish(worker)
    assert terminated > 0
    assert worker.returncode == 0, err
    assert "Traceback" not in err, err
    assert " stopped: " in err.splitlines()[-1], err


async def submitted_on(dsn: str, url: str, count: int) -> list[str]:
    log = await PostgresSagaLog.open(dsn)
    try:
        return [
            await submit(log, AccountRef(url, f"user{n % 3}"), AccountRef(url, f"user{3 + n % 3}"), 1 + n)
            for n in range(count)
        ]
    finally:
        await log.close()


# -- the audit ----------------------------------------------------------------------------


def test_an_audit_waits_for_no_pooled_connection_so_slow_trail_reads_still_finish(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(BANK)
    # Each trail read takes 0.3 s: 32 reads at once over 8 pooled connections
    # would wait past a 0.5 s request timeout for a connection.
    with DelayingProxy(server.port, delay=0.3, prefix=b"GET /transactions") as slow:
        run = saga_cli(
            "batch", "--url", slow.url, "--transfers", "40", "--concurrency", "4", "--request-timeout", "0.5",
            "--db", str(tmp_path / "saga.db"), "--json", "--quiet",
        )  # fmt: skip
        read = slow.held
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    assert (summary["audit"], summary["audited"], summary["violations"]) == ("checked", True, [])
    assert read == 40, "one trail read per saga, each held 0.3 s"


def test_a_service_that_dies_during_the_audit_leaves_it_incomplete_with_the_summary_and_exit_1(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(BANK)
    with DelayingProxy(server.port, delay=1.0, prefix=b"GET /transactions") as slow:
        batch = start_saga(
            "batch", "--url", slow.url, "--transfers", "20", "--concurrency", "4", "--db", str(tmp_path / "saga.db"),
            "--json",
        )  # fmt: skip
        until(lambda: slow.held >= 1, batch, "the audit started")
        server.kill()
        out, err = finish(batch)
    assert batch.returncode == 1, err
    line = one_error_line(err)
    assert line.startswith("error: audit: incomplete (cannot read the trail of "), line
    summary = json.loads(out.splitlines()[-1])
    assert (summary["audit"], summary["audited"], summary["transfers"]) == ("incomplete", False, 20)
    assert summary["audit_problem"] in line
    assert summary["invariants_checked"] is True, "the balances were read before the audit"
    assert summary["violations"] == []
    assert "audit of every saga" in err


# -- recover: what waits for a person, and what another process still holds ---------------


def test_recover_exits_3_while_any_saga_in_the_log_needs_attention(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"

    async def forgotten() -> None:
        log = await SqliteSagaLog.open(db)
        try:
            source, target = AccountRef("http://127.0.0.1:9", "a"), AccountRef("http://127.0.0.1:8", "b")
            record = SagaRecord("forgotten-1", source, target, 5)
            await log.create(record, SagaState.DEBITING)
            because = "bank-b answered from another ledger"
            await log.commit(Change("forgotten-1", 1, SagaState.NEEDS_ATTENTION, error=because))
        finally:
            await log.close()

    asyncio.run(forgotten())
    for _ in range(2):
        # Every time, not only in the run that put it there: it waits for a person.
        run = saga_cli("recover", "--db", str(db), "--json")
        assert run.returncode == 3, run.stderr
        assert json.loads(run.stdout)["needs_attention"] == [
            {"transaction_id": "forgotten-1", "error": "bank-b answered from another ledger"}
        ]
        assert run.stderr == "error: saga forgotten-1 needs attention: bank-b answered from another ledger\n"


def test_recover_right_after_a_worker_died_names_the_sagas_its_leases_still_hold_and_when_they_end(
    start_server: StartServer, pg_dsn: str
) -> None:
    server = start_server(BANK)
    with DelayingProxy(server.port, delay=20.0) as slow:
        ids = asyncio.run(submitted_on(pg_dsn, slow.url, 5))
        worker = start_saga("worker", "--db", pg_dsn, "--lease-seconds", "60", "--worker-id", "doomed")
        try:
            until(lambda: slow.held >= 5, worker, "every debit sent")
            worker.kill()
        finally:
            finish(worker)
        started = time.time()
        run = saga_cli("recover", "--db", pg_dsn, "--json")
        text = saga_cli("recover", "--db", pg_dsn)
    assert run.returncode == 1, run.stderr
    outcome = json.loads(run.stdout)
    assert outcome["recovered"] == []
    assert sorted(held["transaction_id"] for held in outcome["held"]) == sorted(ids)
    for held in outcome["held"]:
        assert held["owner"] == "doomed"
        assert held["state"] == "DEBITING"
        assert started * 1000 + 40_000 < held["lease_expires_at_ms"] <= started * 1000 + 61_000
        assert held["lease_expires_at"].endswith("Z")
    assert "5 unfinished sagas are held by another process's lease, the last until " in run.stderr
    assert text.returncode == 1
    assert sum(line.startswith("HELD ") for line in text.stdout.splitlines()) == 5


# -- a worker stopped while it starts -------------------------------------------------------


def test_sigterm_while_a_worker_connects_to_its_log_ends_it_cleanly_with_its_summary() -> None:
    # A server that takes the connection and never answers: the worker waits in its start-up.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        worker = start_saga("worker", "--db", f"postgresql://postgres@127.0.0.1:{port}/sagas", "--worker-id", "w-1")
        try:
            ready, _, _ = select.select([silent], [], [], 30)
            assert ready, "the worker never tried to reach its log"
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    assert worker.returncode == 0, (worker.returncode, err)
    assert err.splitlines()[-1] == "worker w-1 stopped: 0 claimed, 0 driven to an end or a pause, 0 handed back"
    assert "Traceback" not in err
