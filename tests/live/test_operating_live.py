"""Operating the saga against live services: its metrics endpoint, quiet and plain output, JSON logs, --trail."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import IO

from server.process import REPO_ROOT
from tests.conftest import StartServer
from tests.support.cli import saga_cli, saga_command
from tests.support.metrics import scrape, value

LEDGER_OPERATIONS = ("debit", "credit", "compensate_debit", "compensate_credit")
ACCOUNTS = {"alice": 50_000, "bob": 50_000, "carol": 50_000}


def read_line_with(stream: IO[str], wanted: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError(f"the stream ended before a line with {wanted!r}")
        if wanted in line:
            return line
    raise AssertionError(f"no line with {wanted!r} in time")


def test_a_batch_s_metrics_agree_with_its_summary_and_with_the_service_s(
    start_server: StartServer, tmp_path: Path
) -> None:
    # Half the credits fail and each gets two attempts: retries for certain, and
    # about a quarter of the sagas compensate (none at all: p = 0.75**80, 1e-10),
    # whichever order the concurrent credits meet the fault generator in.
    server = start_server(ACCOUNTS, credit_fault_rate=0.5, fault_seed=7)
    command = saga_command(
        "batch", "--url", server.url, "--transfers", "80", "--concurrency", "8", "--seed", "3",
        "--max-credit-attempts", "2",
        "--db", str(tmp_path / "saga.db"), "--json", "--quiet", "--metrics-port", "0", "--metrics-linger", "60",
    )  # fmt: skip
    batch = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert batch.stdout is not None
        assert batch.stderr is not None
        deadline = time.monotonic() + 120
        metrics_url = read_line_with(batch.stderr, "metrics at ", deadline).split("metrics at ", 1)[1].strip()
        summary = json.loads(read_line_with(batch.stdout, '"transfers"', deadline))
        # The batch is done and lingers: this is the last scrape of its endpoint.
        assert batch.poll() is None
        saga = scrape(metrics_url)
        service = scrape(f"{server.url}/metrics")
    finally:
        batch.terminate()
        batch.wait(timeout=30)

    assert summary["transfers"] == 80
    assert summary["pending"] == 0
    for state, key in (("COMPLETED", "completed"), ("COMPENSATED", "compensated"), ("FAILED", "failed")):
        assert value(saga, "saga_sagas", state=state) == summary[key]
    assert summary["compensated"] > 0, "with half the credits failing twice in a row now and then, some compensate"
    assert summary["retries"] > 0
    assert value(saga, "saga_sagas", state="COMPENSATING") == 0
    assert value(saga, "saga_compensating_oldest_age_seconds") == 0
    assert value(saga, "saga_retries_total") == summary["retries"]
    assert value(saga, "saga_compensations_total") == summary["compensations"]
    assert value(saga, "saga_transitions_total", from_state="DEBITING", to_state="CREDITING") >= summary["completed"]
    assert value(saga, "saga_step_duration_seconds_count") == summary["requests"]
    assert value(saga, "saga_log_commits_total") > 0
    assert value(saga, "saga_log_changes_committed_total") >= value(saga, "saga_log_commits_total")

    # Every request the saga sent, the service answered and counted: by operation, they agree.
    assert (
        sum(value(service, "accounts_requests_total", operation=op) for op in LEDGER_OPERATIONS) == summary["requests"]
    )
    for operation in LEDGER_OPERATIONS:
        sent = value(saga, "saga_steps_total", step=operation)
        assert value(service, "accounts_requests_total", operation=operation) == sent
    assert value(service, "accounts_injected_faults_total") == value(
        saga, "saga_steps_total", step="credit", code="injected_fault"
    )


def test_quiet_prints_only_the_json_line_and_plain_progress_has_no_carriage_return(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(ACCOUNTS, credit_fault_rate=0.3, fault_seed=1)
    quiet = saga_cli(
        "batch", "--url", server.url, "--transfers", "20", "--db", str(tmp_path / "quiet.db"), "--json", "--quiet"
    )
    assert quiet.returncode == 0, quiet.stderr
    assert len(quiet.stdout.splitlines()) == 1
    assert json.loads(quiet.stdout)["transfers"] == 20
    assert quiet.stderr == ""

    shown = saga_cli(
        "batch", "--url", server.url, "--transfers", "20", "--db", str(tmp_path / "shown.db"), "--progress"
    )
    assert shown.returncode == 0, shown.stderr
    assert "\r" not in shown.stderr
    assert "  20/20 transfers (100%)" in shown.stderr.splitlines()
    assert "money conserved" in shown.stdout


def test_verbose_logs_one_json_line_per_state_change_and_show_trail_prints_the_service_side(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"alice": 1_000, "bob": 0}, credit_fault_rate=0.0)
    db = str(tmp_path / "saga.db")
    moved = saga_cli("-v", "transfer", "--from", "alice", "--to", "bob", "--amount", "250", "--url", server.url,
                     "--db", db, "--json")  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    transaction_id = json.loads(moved.stdout)["transaction_id"]
    lines = [json.loads(line) for line in moved.stderr.splitlines()]
    states = [line["state"] for line in lines if line.get("event") == "state"]
    assert states == ["PENDING", "DEBITING", "CREDITING", "COMPLETED"]
    for line in lines:
        assert line["transaction_id"] == transaction_id
        assert line["worker_id"]

    shown = saga_cli("show", transaction_id, "--db", db, "--trail", "--json")
    assert shown.returncode == 0, shown.stderr
    (trail,) = json.loads(shown.stdout)["trails"]
    assert [(entry["operation"], entry["user_id"], entry["outcome"]) for entry in trail["entries"]] == [
        ("debit", "alice", "applied"),
        ("credit", "bob", "applied"),
    ]
    readable = saga_cli("show", transaction_id, "--db", db, "--trail")
    assert f"trail at {server.url}: 2 entries" in readable.stdout
    assert "    credit bob 250: 200 applied, balance 250" in readable.stdout
