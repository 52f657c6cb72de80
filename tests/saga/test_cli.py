"""``python -m saga`` as a user runs it: real processes, one-line errors for bad input, nothing half-done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saga.log import count_sagas
from tests.conftest import StartServer
from tests.support.cli import saga_cli

pytestmark = pytest.mark.integration


def test_transfer_show_and_list(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    db = tmp_path / "saga.db"
    done = saga_cli(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "250", "--url", server.url, "--db", str(db), "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["state"], result["amount"], result["attempts"]) == ("COMPLETED", 250, 2)

    shown = saga_cli("show", result["transaction_id"], "--db", str(db), "--json")
    history = json.loads(shown.stdout)["history"]
    assert [event.get("state") or event["step"] for event in history] == [
        "PENDING",
        "DEBITING",
        "debit",
        "CREDITING",
        "credit",
        "COMPLETED",
    ]
    readable = saga_cli("show", result["transaction_id"], "--db", str(db))
    assert "credit attempt 1: 200" in readable.stdout

    listed = json.loads(saga_cli("list", "--db", str(db), "--json", "--state", "COMPLETED").stdout)
    assert [saga["transaction_id"] for saga in listed] == [result["transaction_id"]]


def test_two_services_with_json_summary(start_server: StartServer, tmp_path: Path) -> None:
    bank_a = start_server({"alice": 100_000, "bob": 100_000}, credit_fault_rate=0.3)
    bank_b = start_server({"carol": 100_000, "dave": 100_000}, credit_fault_rate=0.3)
    run = saga_cli(
        "batch",
        "--source-url",
        bank_a.url,
        "--target-url",
        bank_b.url,
        "--transfers",
        "60",
        "--concurrency",
        "8",
        "--seed",
        "3",
        "--db",
        str(tmp_path / "saga.db"),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    assert summary["transfers"] == 60
    assert summary["completed"] + summary["compensated"] + summary["failed"] == 60
    assert summary["pending"] == 0
    assert summary["money_conserved"] is True
    assert summary["violations"] == []
    assert summary["retries"] > 0
    assert {"transfers", "completed", "compensated", "failed", "pending", "retries", "seconds"} <= set(summary)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "alice", "--to", "zed", "--amount", "5"], "unknown user 'zed'"),
        (["--from", "alice", "--to", "bob", "--amount", "0"], "between 1 and"),
        (["--from", "alice", "--to", "bob", "--amount", "-3"], "between 1 and"),
        (["--from", "alice", "--to", "bob", "--amount", "1.5"], "whole number"),
        (["--from", "alice", "--to", "alice", "--amount", "5"], "same account"),
    ],
)
def test_bad_transfer_input_is_one_line_and_changes_nothing(
    start_server: StartServer, tmp_path: Path, args: list[str], message: str
) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    db = tmp_path / "saga.db"
    run = saga_cli("transfer", *args, "--url", server.url, "--db", str(db))
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert count_sagas(db) == 0


def test_unreachable_service(tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    run = saga_cli(
        "transfer", "--from", "a", "--to", "b", "--amount", "5", "--url", "http://127.0.0.1:9", "--db", str(db)
    )
    assert run.returncode == 2
    assert "cannot reach the accounts service" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert count_sagas(db) == 0


def test_recover_refuses_a_missing_or_corrupt_log(tmp_path: Path) -> None:
    missing = saga_cli("recover", "--db", str(tmp_path / "absent.db"))
    assert (missing.returncode, missing.stderr.strip()) == (2, f"error: no saga log at {tmp_path / 'absent.db'}")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 1000)
    refused = saga_cli("recover", "--db", str(corrupt))
    assert refused.returncode == 2
    assert "not a usable saga log" in refused.stderr
    assert corrupt.read_bytes() == b"garbage" * 1000


def test_batch_needs_services() -> None:
    run = saga_cli("batch", "--transfers", "5")
    assert run.returncode == 2
    assert "--url" in run.stderr
