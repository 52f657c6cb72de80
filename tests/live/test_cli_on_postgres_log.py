"""Every saga command on a PostgreSQL saga log, as a user runs it: batch, transfer, list, show, recover."""

from __future__ import annotations

import json

from tests.conftest import StartServer
from tests.support.cli import saga_cli


def test_the_saga_commands_work_on_a_postgresql_log(start_server: StartServer, pg_dsn: str) -> None:
    service = start_server({"alice": 100_000, "bob": 100_000}, credit_fault_rate=0.3, fault_seed=3)

    batch = saga_cli("batch", "--url", service.url, "--db", pg_dsn, "--transfers", "40", "--json", "--quiet")
    assert batch.returncode == 0, batch.stderr
    report = json.loads(batch.stdout)
    assert (report["transfers"], report["money_conserved"], report["violations"]) == (40, True, [])

    transfer = saga_cli(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--url", service.url, "--db", pg_dsn
    )
    assert transfer.returncode == 0, transfer.stderr
    assert transfer.stdout.startswith("COMPLETED ")
    transaction_id = transfer.stdout.split()[1].rstrip(":")

    listed = json.loads(saga_cli("list", "--db", pg_dsn, "--json").stdout)
    assert len(listed) == 41
    assert {saga["state"] for saga in listed} <= {"COMPLETED", "COMPENSATED", "FAILED"}

    shown = json.loads(saga_cli("show", transaction_id, "--db", pg_dsn, "--json").stdout)
    assert shown["state"] == "COMPLETED"
    assert [event["step"] for event in shown["history"] if event["kind"] == "attempt"][:1] == ["debit"]

    recovered = saga_cli("recover", "--db", pg_dsn, "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["recovered"] == []
