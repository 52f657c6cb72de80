"""``python -m server --database sqlite:///…`` as real processes: a crash, a restart, two processes on one file."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from server.process import REPO_ROOT
from tests.conftest import StartServer

ACCOUNTS = {"alice": 1_000, "bob": 0}


def post(url: str, operation: str, transaction_id: str, user_id: str, amount: int) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{url}/{operation}",
        data=json.dumps({"user_id": user_id, "amount": amount}).encode(),
        headers={"transaction_id": transaction_id, "content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lowercase(response.headers.items()), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _lowercase(error.headers.items()), json.loads(error.read())


def _lowercase(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def get(url: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", headers={"transaction_id": "read"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def sqlite_url(path: Path) -> list[str]:
    return ["--database", f"sqlite:///{path}"]


def test_a_replay_after_a_kill_answers_the_same_body_and_moves_no_money_twice(
    start_server: StartServer, tmp_path: Path
) -> None:
    database = sqlite_url(tmp_path / "ledger.db")
    first = start_server(ACCOUNTS, extra_args=database)
    status, headers, body = post(first.url, "debit", "t1", "alice", 250)
    assert (status, body["balance"]) == (200, 750)
    assert "idempotent-replayed" not in headers
    first.kill()

    second = start_server(ACCOUNTS, extra_args=database)
    replay_status, replay_headers, replay_body = post(second.url, "debit", "t1", "alice", 250)
    assert (replay_status, replay_body) == (status, body)
    assert replay_headers["idempotent-replayed"] == "true"
    assert get(second.url, "/accounts/alice") == {"user_id": "alice", "balance": 750}
    assert [entry["operation"] for entry in get(second.url, "/transactions/t1")["entries"]] == ["debit"]


def test_two_processes_on_one_file_share_one_ledger_and_never_overdraw(
    start_server: StartServer, tmp_path: Path
) -> None:
    database = sqlite_url(tmp_path / "ledger.db")
    servers = [start_server(ACCOUNTS, extra_args=database) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(
            pool.map(lambda i: post(servers[i % 2].url, "debit", f"t{i}", "alice", 100)[0], range(30)),
        )
    assert sorted(answers) == [200] * 10 + [409] * 20
    for server in servers:
        assert get(server.url, "/accounts/alice")["balance"] == 0
    # Whichever process applied t0, the other one replays it.
    statuses = {post(server.url, "debit", "t0", "alice", 100)[1].get("idempotent-replayed") for server in servers}
    assert statuses == {"true"}


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "--port", "0", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("database", "exit_code", "reason"),
    [
        ("mysql://db.example/ledger", 2, "is not one of memory, sqlite://, postgresql://"),
        ("sqlite://ledger.db", 2, "write sqlite:///relative/file.db"),
        ("sqlite:////no/such/folder/ledger.db", 1, "cannot open the SQLite database /no/such/folder/ledger.db"),
    ],
    ids=["unknown scheme", "malformed sqlite url", "missing folder"],
)
def test_a_database_the_server_cannot_use_is_one_line_on_stderr_and_a_nonzero_exit(
    database: str, exit_code: int, reason: str
) -> None:
    done = serve("--database", database)
    assert done.returncode == exit_code, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    assert reason in done.stderr


def position_and_ledger(url: str) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/accounts", headers={"transaction_id": "read"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.headers["ledger-position"]), response.headers["ledger-id"]


def test_a_ledger_restored_from_a_backup_answers_a_lower_position_under_the_same_ledger_id(
    start_server: StartServer, tmp_path: Path
) -> None:
    path, backup = tmp_path / "ledger.db", tmp_path / "backup.db"
    server = start_server(ACCOUNTS, extra_args=sqlite_url(path))
    answered = [post(server.url, "debit", f"t{i}", "alice", 10) for i in range(3)]
    answered += [post(server.url, "credit", f"t{i}", "bob", 10) for i in range(3)]
    assert [status for status, _, _ in answered] == [200] * 6
    positions = [int(headers["ledger-position"]) for _, headers, _ in answered]
    assert positions == sorted(set(positions)), positions  # each recorded entry moves it on
    at_backup, ledger_id = position_and_ledger(server.url)
    assert at_backup == positions[-1]

    # The backup API copies a consistent snapshot, the WAL's committed pages included, while the server writes on.
    with sqlite3.connect(path) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)
    for i in range(3, 6):
        assert post(server.url, "debit", f"t{i}", "alice", 10)[0] == 200
    before_restore, _ = position_and_ledger(server.url)
    assert before_restore > at_backup
    server.stop()

    # The restore: the backup over the file, and the old WAL gone with its writes.
    shutil.copyfile(backup, path)
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    restored = start_server(ACCOUNTS, extra_args=sqlite_url(path))
    position, restored_id = position_and_ledger(restored.url)
    assert (position, restored_id) == (at_backup, ledger_id)
    assert position < before_restore
    assert get(restored.url, "/accounts/alice")["balance"] == 1_000 - 3 * 10
    status, headers, _ = post(restored.url, "debit", "t9", "alice", 10)
    assert (status, int(headers["ledger-position"]), headers["ledger-id"]) == (200, at_backup + 1, ledger_id)
