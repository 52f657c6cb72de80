"""kill -9 of an accounts service in the middle of a saga batch, a restart on the same database, then recovery.

Run on each durable store. Afterwards the money must be conserved to the
unit, every balance exact, every audit trail intact, and the restarted
service's own record must agree with its balances: no replayed debit or
credit applied twice.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from saga import ServiceClients, services
from saga.logs import SagaLogError, count_sagas
from server.process import REPO_ROOT
from server.shared.database_url import parse_database_url
from server.stores import open_store
from tests.conftest import StartServer
from tests.support.cli import saga_cli
from tests.support.money import violations_in
from tests.support.postgres import fresh_database

BANK_A = {"alice": 500_000, "bob": 500_000, "carol": 500_000}
BANK_B = {"dave": 500_000, "erin": 500_000, "frank": 500_000}


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database URL for each bank, on the store under test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bank-a.db'}", f"sqlite:///{tmp_path / 'bank-b.db'}"
        return
    with ExitStack() as stack:
        yield stack.enter_context(fresh_database("bank_a")), stack.enter_context(fresh_database("bank_b"))


def logged_sagas(db: Path) -> int:
    try:
        return count_sagas(db)
    except SagaLogError:
        return 0


async def snapshot(urls: list[str]) -> dict[str, dict[str, int]]:
    async with ServiceClients() as reader:
        return await services.snapshot(reader, urls)


async def store_agrees_with_itself(database: str, accounts: dict[str, int]) -> None:
    store = await open_store(parse_database_url(database), accounts)
    try:
        await store.check_invariants()
    finally:
        await store.close()


def test_a_service_killed_mid_batch_restarts_on_its_database_and_loses_nothing(
    start_server: StartServer, tmp_path: Path, databases: tuple[str, str]
) -> None:
    bank_a_database, bank_b_database = databases
    bank_a = start_server(
        BANK_A, credit_fault_rate=0.3, fault_seed=5, extra_args=["--database", bank_a_database, "--replica-id", "a"]
    )
    bank_b = start_server(
        BANK_B,
        credit_fault_rate=0.3,
        credit_fault_after_commit_rate=0.1,
        fault_seed=6,
        extra_args=["--database", bank_b_database, "--replica-id", "b"],
    )
    db = tmp_path / "saga.db"
    before = asyncio.run(snapshot([bank_a.url, bank_b.url]))
    batch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "saga",
            "batch",
            "--source-url",
            bank_a.url,
            "--target-url",
            bank_b.url,
            "--db",
            str(db),
            "--transfers",
            "1500",
            "--concurrency",
            "32",
            "--json",
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while logged_sagas(db) < 200 and time.monotonic() < deadline and batch.poll() is None:
            time.sleep(0.02)
        assert batch.poll() is None, "the batch must still be running when the service is killed"
        bank_b.restart_after_kill()
        batch.communicate(timeout=240)
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.communicate()

    recovered = saga_cli("recover", "--db", str(db), "--json")
    assert recovered.returncode == 0, recovered.stderr
    listed = json.loads(saga_cli("list", "--db", str(db), "--json").stdout)
    states = Counter(saga["state"] for saga in listed)
    assert set(states) <= {"COMPLETED", "COMPENSATED", "FAILED"}, states
    assert sum(states.values()) == 1500
    assert states["COMPLETED"] > 0

    assert violations_in(db, before) == []
    after = asyncio.run(snapshot([bank_a.url, bank_b.url]))
    assert sum(map(sum, (accounts.values() for accounts in after.values()))) == sum(BANK_A.values()) + sum(
        BANK_B.values()
    )
    bank_a.stop()
    bank_b.stop()
    asyncio.run(store_agrees_with_itself(bank_a_database, BANK_A))
    asyncio.run(store_agrees_with_itself(bank_b_database, BANK_B))
