"""``python -m saga`` as a user runs it: real processes, one-line errors for bad input, nothing half-done."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from saga.logs import count_sagas
from tests.conftest import StartServer
from tests.support.cli import saga_cli, unprivileged
from tests.support.ports import dead_url


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


@pytest.mark.parametrize(
    "args",
    [
        ["transfer", "--from", "alice", "--to", "bob", "--amount", " 5"],
        ["transfer", "--from", "alice", "--to", "bob", "--amount", "\u0665"],
        ["transfer", "--from", "alice", "--to", "bob", "--amount", "1_000"],
        ["transfer", "--from", "alice", "--to", "bob", "--amount", "+5"],
        ["batch", "--transfers", "1_0"],
        ["batch", "--concurrency", "\u0663"],
        ["batch", "--transfers", "9" * 5000],
    ],
)
def test_integer_flags_take_ascii_digits_only(args: list[str], tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    run = saga_cli(*args, "--url", "http://127.0.0.1:9", "--db", str(db))
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "digits 0-9" in run.stderr or "between 1 and" in run.stderr
    assert not db.exists()


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "0", "-1", "0.0", "1e999", " 5"])
def test_a_request_timeout_must_be_a_positive_finite_number(seconds: str, tmp_path: Path) -> None:
    db = tmp_path / "saga.db"
    for command in (["batch", "--url", "http://127.0.0.1:9"], ["recover"]):
        run = saga_cli(*command, "--request-timeout", seconds, "--db", str(db))
        assert run.returncode == 2
        assert run.stderr.startswith("error: argument --request-timeout:"), run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not db.exists()


def unusable_db_paths(tmp_path: Path) -> dict[str, Path]:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    return {
        "sysfs": Path("/sys/x.db"),
        "read-only folder": read_only / "saga.db",
        "missing folder": tmp_path / "absent" / "saga.db",
        "a folder": tmp_path,
    }


@pytest.mark.parametrize("where", ["sysfs", "read-only folder", "missing folder", "a folder"])
def test_an_unusable_db_path_is_one_line_for_every_command(where: str, tmp_path: Path) -> None:
    db = unusable_db_paths(tmp_path)[where]
    commands = [
        ["transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--url", "http://127.0.0.1:9"],
        ["batch", "--url", "http://127.0.0.1:9", "--transfers", "5"],
        ["recover"],
        ["show", "3f2b8c1e-8d4a-4a53-9d1e-5f0e2b7c9a10"],
        ["list"],
    ]
    for command in commands:
        run = saga_cli(*command, "--db", str(db), wrapper=unprivileged())
        assert run.returncode == 2, (command, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (command, run.stderr)
        assert run.stderr.startswith("error: "), (command, run.stderr)
        assert str(db.parent) in run.stderr, (command, run.stderr)


def test_a_refused_connection_is_named_so(tmp_path: Path) -> None:
    dead = dead_url()
    run = saga_cli(
        "transfer", "--from", "a", "--to", "b", "--amount", "5", "--url", dead, "--db", str(tmp_path / "a.db")
    )
    assert run.returncode == 2
    assert run.stderr == f"error: cannot reach the accounts service at {dead}: ConnectError: connection refused\n"


@pytest.mark.parametrize(
    "target_url",
    ["http://localhost:{port}", "http://[::1]:{port}", "HTTP://LocalHost:{port}/", "http://127.0.0.1:{port}/"],
)
def test_one_account_spelt_two_ways_is_not_a_transfer(
    start_server: StartServer, tmp_path: Path, target_url: str
) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    db = tmp_path / "saga.db"
    run = saga_cli(
        "transfer", "--from", "alice", "--to", "alice", "--amount", "5",
        "--source-url", server.url, "--target-url", target_url.format(port=server.port), "--db", str(db),
    )  # fmt: skip
    assert run.returncode == 2, run.stdout
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert count_sagas(db) == 0
    request = urllib.request.Request(f"{server.url}/accounts", headers={"transaction_id": "test-read"})
    listed = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert {account["user_id"]: account["balance"] for account in listed["accounts"]} == {"alice": 1_000, "bob": 0}
