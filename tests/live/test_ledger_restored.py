"""A service's ledger restored from an older backup is caught, quarantined, and reconciled.

Bank A's ledger is backed up, more transfers run, and the backup is restored
over it while its process is down: A forgets the debits of every transfer
since the backup, so its balances rise and money is minted. The next batch
must see A's ledger position below the one the log saw, quarantine A before
any saga moves money there, and exit 3 naming it; ``recover`` and
``reconcile`` must say so too, and reconcile must list exactly the transfers
A lost, which add up to the money minted. Only an operator's recorded
decision lifts the quarantine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from generated_client.accounts import Client
from generated_client.accounts.api.accounts import list_accounts
from generated_client.accounts.models import AccountList
from server.process import ServerProcess
from tests.conftest import StartServer
from tests.support.cli import saga_cli
from tests.support.postgres import fresh_database

BANK_A = {f"a{index}": 100_000 for index in range(4)}
BANK_B = {f"b{index}": 100_000 for index in range(4)}
TRANSFERS = 12


def batch(log: Path, source: ServerProcess, target: ServerProcess, seed: int) -> subprocess.CompletedProcess[str]:
    return saga_cli(
        "batch",
        "--db",
        str(log),
        "--source-url",
        source.url,
        "--target-url",
        target.url,
        "--transfers",
        str(TRANSFERS),
        "--concurrency",
        "4",
        "--seed",
        str(seed),
        "--json",
    )


def total(*banks: ServerProcess) -> int:
    money = 0
    for bank in banks:
        with Client(base_url=bank.url) as client:
            answer = list_accounts.sync(client=client, transaction_id=f"read-{uuid.uuid4()}")
        assert isinstance(answer, AccountList)
        money += sum(account.balance for account in answer.accounts)
    return money


def completed(log: Path) -> list[dict[str, object]]:
    listing = saga_cli("list", "--db", str(log), "--state", "COMPLETED", "--json")
    assert listing.returncode == 0, listing.stderr
    sagas: list[dict[str, object]] = json.loads(listing.stdout)
    return sagas


def ids(sagas: list[dict[str, object]]) -> set[str]:
    return {str(saga["transaction_id"]) for saga in sagas}


def check_the_restore_is_caught(
    log: Path,
    bank_a: ServerProcess,
    bank_b: ServerProcess,
    restore_a: Callable[[], object],
    opening_total: int,
    kept: set[str],
) -> None:
    """The scenario after the first batch ran and A's backup was taken; ``restore_a`` puts the backup back.

    ``kept`` are the completed sagas whose debits the restored ledger still holds.
    """
    second = batch(log, bank_a, bank_b, seed=2)
    assert second.returncode == 0, second.stdout + second.stderr
    completed_before = completed(log)
    lost_by_a = {str(saga["transaction_id"]): saga for saga in completed_before if saga["transaction_id"] not in kept}

    bank_a.restart_after_kill(meanwhile=restore_a)
    minted = total(bank_a, bank_b) - opening_total
    assert minted > 0, "A forgot debits whose credits B kept"

    third = batch(log, bank_a, bank_b, seed=3)
    said = third.stdout + third.stderr
    assert third.returncode == 3, said
    assert json.loads(third.stdout.splitlines()[-1])["quarantined"] == [bank_a.url]
    assert bank_a.url in said, said
    assert "quarantined" in said, said
    assert len(completed(log)) == len(completed_before), "no saga completes against the restored ledger"
    assert total(bank_a, bank_b) - opening_total == minted, "the refused batch moved no money"

    recovered = saga_cli("recover", "--db", str(log))
    assert recovered.returncode == 3, recovered.stdout + recovered.stderr
    assert bank_a.url in recovered.stdout + recovered.stderr

    reconciled = saga_cli("reconcile", "--db", str(log), "--json")
    assert reconciled.returncode == 3, reconciled.stderr
    report = json.loads(reconciled.stdout.splitlines()[-1])
    lost = [finding for finding in report["findings"] if finding["kind"] == "lost"]
    assert {finding["service"] for finding in lost} == {bank_a.url}
    lost_ids = {finding["transaction_id"] for finding in lost}
    # Exactly the transfers the restored ledger forgot, and their amounts are the money minted.
    assert lost_ids == set(lost_by_a)
    assert sum(int(str(saga["amount"])) for saga in lost_by_a.values()) == minted
    assert any(finding["kind"] == "went_back" and finding["service"] == bank_a.url for finding in report["findings"])

    refused = saga_cli("reconcile", "--db", str(log), "--accept", bank_a.url)
    assert refused.returncode == 2, "a decision without a reason is not recorded"
    accepted = saga_cli(
        "reconcile", "--db", str(log), "--accept", bank_a.url, "--reason", "restored from backup; minted money moved"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "accepted" in accepted.stdout
    fourth = batch(log, bank_a, bank_b, seed=4)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr


def test_a_sqlite_ledger_restored_from_a_backup_is_quarantined_and_reconciled(
    start_server: StartServer, tmp_path: Path
) -> None:
    a_db, backup = tmp_path / "a.db", tmp_path / "a-backup.db"
    bank_a = start_server(BANK_A, extra_args=["--database", f"sqlite:///{a_db}"])
    bank_b = start_server(BANK_B, extra_args=["--database", f"sqlite:///{tmp_path / 'b.db'}"])
    opening_total = total(bank_a, bank_b)
    log = tmp_path / "saga.db"
    first = batch(log, bank_a, bank_b, seed=1)
    assert first.returncode == 0, first.stdout + first.stderr
    # The backup API copies a consistent database, what sits in the WAL included.
    with sqlite3.connect(a_db) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)

    def restore() -> None:
        for stale in (a_db, Path(f"{a_db}-wal"), Path(f"{a_db}-shm")):
            stale.unlink(missing_ok=True)
        with sqlite3.connect(backup) as source, sqlite3.connect(a_db) as restored:
            source.backup(restored)

    check_the_restore_is_caught(log, bank_a, bank_b, restore, opening_total, kept=ids(completed(log)))


def test_a_sqlite_ledger_whose_wal_file_was_deleted_is_quarantined_and_reconciled(
    start_server: StartServer, tmp_path: Path
) -> None:
    a_db = tmp_path / "a.db"
    bank_a = start_server(BANK_A, extra_args=["--database", f"sqlite:///{a_db}"])
    bank_b = start_server(BANK_B, extra_args=["--database", f"sqlite:///{tmp_path / 'b.db'}"])
    opening_total = total(bank_a, bank_b)
    log = tmp_path / "saga.db"
    first = batch(log, bank_a, bank_b, seed=1)
    assert first.returncode == 0, first.stdout + first.stderr

    def lose_the_wal() -> None:
        # Every recent write of A sits in its -wal file, as after any short run: A forgets all of them.
        assert Path(f"{a_db}-wal").stat().st_size > 0
        for stale in (Path(f"{a_db}-wal"), Path(f"{a_db}-shm")):
            stale.unlink()

    check_the_restore_is_caught(log, bank_a, bank_b, lose_the_wal, opening_total, kept=set())


def test_a_postgres_ledger_restored_with_pg_restore_is_quarantined_and_reconciled(
    start_server: StartServer, tmp_path: Path
) -> None:
    with fresh_database("ledger_a") as a_dsn, fresh_database("ledger_b") as b_dsn:
        bank_a = start_server(BANK_A, extra_args=["--database", a_dsn])
        bank_b = start_server(BANK_B, extra_args=["--database", b_dsn])
        try:
            opening_total = total(bank_a, bank_b)
            log = tmp_path / "saga.db"
            first = batch(log, bank_a, bank_b, seed=1)
            assert first.returncode == 0, first.stdout + first.stderr
            dump = tmp_path / "a.dump"
            env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
            subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", a_dsn], check=True, env=env)

            def restore() -> None:
                subprocess.run(
                    ["pg_restore", "--clean", "--if-exists", "--single-transaction", f"--dbname={a_dsn}", str(dump)],
                    check=True,
                    env=env,
                    capture_output=True,
                )

            check_the_restore_is_caught(log, bank_a, bank_b, restore, opening_total, kept=ids(completed(log)))
        finally:
            # Before the databases are dropped: a server still connected would hold them.
            bank_a.stop()
            bank_b.stop()
