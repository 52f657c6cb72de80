"""A ledger's id across restarts of live services: new for memory, kept for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

ACCOUNTS = {"alice": 1_000, "bob": 0}


def test_a_restarted_memory_service_is_a_new_ledger_and_a_restarted_sqlite_one_is_not(
    start_server: Any, tmp_path: Path
) -> None:
    memory = start_server(ACCOUNTS)
    durable = start_server(ACCOUNTS, extra_args=["--database", f"sqlite:///{tmp_path / 'ledger.db'}"])

    def ledger_id(url: str) -> str:
        return httpx.get(f"{url}/accounts", headers={"transaction_id": "r"}).headers["ledger-id"]

    before = ledger_id(memory.url), ledger_id(durable.url)
    memory.restart_after_kill()
    durable.restart_after_kill()
    after = ledger_id(memory.url), ledger_id(durable.url)
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_replicas_on_one_postgresql_database_are_one_ledger_across_restarts(start_server: Any, pg_dsn: str) -> None:
    replicas = [start_server(ACCOUNTS, extra_args=["--database", pg_dsn]) for _ in range(2)]

    def ledger_ids() -> set[str]:
        return {
            httpx.get(f"{replica.url}/accounts", headers={"transaction_id": "r"}).headers["ledger-id"]
            for replica in replicas
        }

    (before,) = ledger_ids()
    replicas[0].restart_after_kill()
    assert ledger_ids() == {before}
