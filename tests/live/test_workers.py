"""Worker processes on one PostgreSQL saga log: takeover after kill -9 and after a pause past the lease.

Real ``python -m saga worker`` processes drive transfers between two real
accounts services with credit faults; the log is a fresh database on a real
PostgreSQL server (tests/support/postgres.py). Every worker started here is
stopped at the end of its test, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from saga import AccountRef, SagaState, ServiceClients, services, verify
from saga.drive import batch
from saga.logs.postgres import PostgresSagaLog
from saga.records import Event, SagaRecord
from saga.simulation.invariants import check_epochs
from saga.submission import submit
from server.process import REPO_ROOT
from tests.conftest import StartServer

TRANSFERS = 3_000
LEASE_SECONDS = 2.0
POLL_SECONDS = 0.5


class Workers:
    """``python -m saga worker`` processes, each with its stderr in a file; all stopped at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, dsn: str, worker_id: str, *, lease_seconds: float = LEASE_SECONDS, concurrency: int = 24) -> None:
        command = [
            sys.executable,
            "-m",
            "saga",
            "worker",
            "--db",
            dsn,
            "--worker-id",
            worker_id,
            "--concurrency",
            str(concurrency),
            "--lease-seconds",
            str(lease_seconds),
            "--poll-seconds",
            str(POLL_SECONDS),
            "--request-timeout",
            "5",
        ]
        with open(self.folder / f"{worker_id}.err", "wb") as stderr:
            self.processes[worker_id] = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def stderr(self, worker_id: str) -> str:
        return (self.folder / f"{worker_id}.err").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{condition.__name__} still false after {within:g} s")
        await asyncio.sleep(interval)


async def count(dsn: str, sql: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(sql))
    finally:
        await connection.close()


async def held_by(dsn: str) -> dict[str, set[str]]:
    """owner -> the unfinished sagas it holds now."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT owner, transaction_id FROM saga_sagas WHERE owner IS NOT NULL "
            "AND state NOT IN ('COMPLETED', 'COMPENSATED', 'FAILED')"
        )
    finally:
        await connection.close()
    held: dict[str, set[str]] = {}
    for owner, transaction_id in rows:
        held.setdefault(owner, set()).add(transaction_id)
    return held


def unlogged_requests(
    records: list[SagaRecord],
    histories: dict[str, list[Event]],
    trails: dict[tuple[str, str], list[verify.TrailItem]],
) -> list[str]:
    """Requests a service recorded under a saga's id with no attempt of that step in the log, and not refused.

    A replay records nothing new, and a refusal (a fence) moved no money: every
    other request the services saw must be one the log knows was sent.
    """
    problems = []
    for record in records:
        logged = {event.attempt.step for event in histories[record.transaction_id] if event.attempt is not None}
        for account in (record.source, record.target):
            for item in trails.get((account.service_url, record.transaction_id), []):
                if item.operation not in logged and item.outcome is not None:
                    problems.append(f"{record.transaction_id}: {item.operation} {item.outcome} is not in the log")
    return problems


def test_three_workers_take_over_from_a_killed_and_a_paused_one_and_every_transfer_ends_exactly(
    start_server: StartServer, pg_dsn: str, workers: Workers
) -> None:
    source = start_server({f"a{i}": 1_000_000 for i in range(20)}, credit_fault_rate=0.0)
    target = start_server({f"b{i}": 1_000_000 for i in range(20)}, credit_fault_rate=0.3, fault_seed=7)
    urls = [source.url, target.url]

    async def scenario() -> None:
        async with ServiceClients() as reader:
            before = await services.snapshot(reader, urls)
        planned = batch.plan(batch.Workload(TRANSFERS, max_amount=5_000, seed=12), source.url, target.url, before)
        log = await PostgresSagaLog.open(pg_dsn, pool_size=8)
        try:
            # Submitted first, so that the workers have a backlog and hold many sagas at once.
            slots = asyncio.Semaphore(8)

            async def submitted(transfer: batch.PlannedTransfer) -> str:
                async with slots:
                    return await submit(log, transfer.source, transfer.target, transfer.amount)

            ids = await asyncio.gather(*(submitted(transfer) for transfer in planned))
            started = time.monotonic()
            for worker_id in ("w0", "w1", "w2"):
                workers.start(pg_dsn, worker_id)
            ended_sql = "SELECT count(*) FROM saga_sagas WHERE state IN ('COMPLETED', 'COMPENSATED', 'FAILED')"

            async def a_third_ended() -> bool:
                return await count(pg_dsn, ended_sql) >= TRANSFERS // 3

            await wait_until(a_third_ended, within=240)

            async def both_hold_sagas() -> bool:
                held = await held_by(pg_dsn)
                return bool(held.get("w0")) and bool(held.get("w1"))

            await wait_until(both_hold_sagas, within=60, interval=0.01)
            # kill -9 one worker; stop another past its lease, then let it carry on.
            workers.processes["w0"].kill()
            os.kill(workers.processes["w1"].pid, signal.SIGSTOP)
            held_at_the_fault = await held_by(pg_dsn)
            await asyncio.sleep(3 * LEASE_SECONDS + POLL_SECONDS)
            os.kill(workers.processes["w1"].pid, signal.SIGCONT)

            async def all_ended() -> bool:
                return await count(pg_dsn, ended_sql) == TRANSFERS

            await wait_until(all_ended, within=300)
            seconds = time.monotonic() - started
            for worker_id in ("w1", "w2"):
                workers.processes[worker_id].send_signal(signal.SIGTERM)
            for worker_id in ("w1", "w2"):
                assert workers.processes[worker_id].wait(timeout=60) == 0, workers.stderr(worker_id)[-3000:]

            records = await log.sagas()
            assert sorted(record.transaction_id for record in records) == sorted(ids)
            histories = {record.transaction_id: await log.history(record.transaction_id) for record in records}
            ends = [verify.SagaEnd.of(r) for r in records]
            async with ServiceClients() as reader:
                after = await services.snapshot(reader, urls)
                trails = await services.trails(reader, ends)
        finally:
            await log.close()

        # Every saga terminal; money conserved and every balance exact; trails agree with the log.
        assert all(record.state.is_terminal for record in records)
        assert verify.check(before, after, ends, trails, sole_traffic=True) == []
        # No two owners within one epoch, and nothing committed from a stale epoch after a takeover.
        assert check_epochs(histories) == []
        assert unlogged_requests(records, histories, trails) == []

        taken_over = {
            record.transaction_id
            for record in records
            if any(event.kind == "claim" and (event.epoch or 0) > 1 for event in histories[record.transaction_id])
        }
        refused = sum(
            1
            for record in records
            for event in histories[record.transaction_id]
            if event.kind == "claim" and event.owner == "w1" and (event.epoch or 0) > 1
        )
        states = Counter(record.state for record in records)
        stranded = {owner: len(ids) for owner, ids in held_at_the_fault.items()}
        print(
            f"\ntakeover run: {TRANSFERS} transfers in {seconds:.1f} s; {dict(states)}; "
            f"held when w0 was killed and w1 stopped: {stranded}; {len(taken_over)} sagas taken over (epoch > 1); "
            f"w1 claims after its pause: {refused}; requests logged {sum(r.attempts for r in records)}"
        )
        # Every saga the killed and the stopped worker held was taken over by another, one epoch up.
        assert held_at_the_fault.get("w0", set()) <= taken_over
        assert held_at_the_fault.get("w1", set()) <= taken_over
        assert states[SagaState.COMPENSATED] > 0
        assert states[SagaState.COMPLETED] > 0

    asyncio.run(scenario())


def test_sigterm_hands_back_every_lease_and_another_worker_finishes_at_once(
    start_server: StartServer, pg_dsn: str, workers: Workers
) -> None:
    # A slow, faulty credit keeps sagas in flight when the signal comes.
    source = start_server({"alice": 10_000_000}, credit_fault_rate=0.0)
    target = start_server({"bob": 0}, credit_fault_rate=0.5, fault_seed=3)

    async def scenario() -> None:
        log = await PostgresSagaLog.open(pg_dsn, pool_size=2)
        try:
            for _ in range(400):
                await submit(log, AccountRef(source.url, "alice"), AccountRef(target.url, "bob"), 10)
            workers.start(pg_dsn, "first", lease_seconds=120, concurrency=32)
            ended_sql = "SELECT count(*) FROM saga_sagas WHERE state IN ('COMPLETED', 'COMPENSATED', 'FAILED')"

            async def some_ended() -> bool:
                return await count(pg_dsn, ended_sql) >= 20

            await wait_until(some_ended, within=120)
            workers.processes["first"].send_signal(signal.SIGTERM)
            assert workers.processes["first"].wait(timeout=60) == 0, workers.stderr("first")[-3000:]
            assert "stopped:" in workers.stderr("first")
            assert await count(pg_dsn, "SELECT count(*) FROM saga_sagas WHERE owner IS NOT NULL") == 0
            assert await count(pg_dsn, ended_sql) < 400, "stopped before the end, so that there was something to hand"

            # Leases of 120 s: only sagas handed back can be finished this soon by another worker.
            workers.start(pg_dsn, "second", lease_seconds=120, concurrency=32)

            async def all_ended() -> bool:
                return await count(pg_dsn, ended_sql) == 400

            await wait_until(all_ended, within=90)
            workers.processes["second"].send_signal(signal.SIGINT)
            assert workers.processes["second"].wait(timeout=60) == 0
            assert await count(pg_dsn, "SELECT count(*) FROM saga_sagas WHERE owner IS NOT NULL") == 0
        finally:
            await log.close()

    asyncio.run(scenario())


def test_submit_with_a_reused_idempotency_key_creates_one_saga_and_waits_for_its_end(
    start_server: StartServer, pg_dsn: str, workers: Workers
) -> None:
    bank = start_server({"alice": 1_000, "bob": 0}, credit_fault_rate=0.0)
    command = [
        sys.executable, "-m", "saga", "submit", "--from", "alice", "--to", "bob", "--amount", "250",
        "--url", bank.url, "--db", pg_dsn, "--idempotency-key", "order-17",
    ]  # fmt: skip
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    transaction_id = first.stdout.strip()
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert (again.returncode, again.stdout.strip()) == (0, transaction_id)
    assert asyncio.run(count(pg_dsn, "SELECT count(*) FROM saga_sagas")) == 1

    workers.start(pg_dsn, "only")
    waited = subprocess.run(
        [*command, "--wait"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith(f"COMPLETED {transaction_id}")
    assert asyncio.run(count(pg_dsn, "SELECT count(*) FROM saga_sagas")) == 1

    other = subprocess.run(
        [*command[:9], "300", *command[10:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert other.returncode == 2
    assert "already used for another transfer" in other.stderr
