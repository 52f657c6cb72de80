"""``python -m saga`` as a person at a terminal meets it: it says what it waits on as it waits, shows times
as times and the key a transfer came with, reads SAGA_DB like --db, and stops quietly when its reader does."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from saga.logs import SqliteSagaLog
from saga.records import AccountRef
from saga.submission import submit
from server.process import REPO_ROOT
from tests.conftest import StartServer
from tests.support.cli import saga_cli, saga_command, start_saga
from tests.support.ports import dead_url
from tests.support.proxy import DelayingProxy

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
BACKOFF = r"next try in (\d+ ms|\d+\.\d s)"


def saga_with_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m saga args`` with ``env`` added to this process's environment, SAGA_* taken out first."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SAGA_")}
    return subprocess.run(
        saga_command(*args),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**environment, **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def waiting(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("waiting: ")]


# -- what a run waits on, on stderr, as it happens ----------------------------------------------


def test_a_transfer_whose_credits_keep_failing_says_each_time_what_it_waits_for(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"alice": 1_000, "bob": 0}, credit_fault_rate=1.0, fault_seed=7)
    run = saga_cli(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "250", "--url", server.url,
        "--db", str(tmp_path / "saga.db"), "--max-credit-attempts", "4",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    # Standard output is the one summary line, as scripts read it.
    (summary,) = run.stdout.splitlines()
    bank = re.escape(server.url)
    assert re.fullmatch(
        rf"COMPENSATED \S+: 250 from alice@{bank} to bob@{bank}, 7 requests, 3 retries \(credit outcome unknown\)",
        summary,
    )
    lines = waiting(run.stderr)
    assert len(lines) == 3, run.stderr
    for number, line in enumerate(lines, start=1):
        assert re.fullmatch(rf"waiting: credit attempt {number} of 4 failed \(500 injected_fault\); {BACKOFF}", line), (
            line
        )


def test_a_request_left_unanswered_is_told_of_while_it_is_out(start_server: StartServer, tmp_path: Path) -> None:
    """A bank that stops answering credits: the CLI says so within a second, not when the transfer ends."""
    server = start_server({"alice": 1_000, "bob": 0})
    log = tmp_path / "saga.db"
    with DelayingProxy(server.port, delay=2.5, prefix=b"POST /credit", hold_answers=True) as slow:
        started = time.monotonic()
        process = start_saga(
            "transfer", "--from", "alice", "--to", "bob", "--amount", "250", "--url", slow.url,
            "--db", str(log), "--request-timeout", "1.5", "--max-credit-attempts", "2",
        )  # fmt: skip
        try:
            assert process.stderr is not None
            told: list[tuple[float, str]] = []
            for line in process.stderr:
                told.append((time.monotonic() - started, line.rstrip("\n")))
            assert process.stdout is not None
            stdout = process.stdout.read()
            ended = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    assert process.returncode == 1, told
    assert stdout.startswith("COMPENSATED ")
    lines = [line for _, line in told if line.startswith("waiting: ")]
    no_answer = f"sent to {slow.url}: no answer after 1.0 s; it times out at 1.5 s"
    assert lines[0] == f"waiting: credit attempt 1 of 2 {no_answer}"
    assert re.fullmatch(rf"waiting: credit attempt 1 of 2 failed \(timeout\); {BACKOFF}", lines[1])
    assert lines[2:] == [f"waiting: credit attempt 2 of 2 {no_answer}"]
    # Each as it happened: the first a second after the credit went out, seconds before the end.
    first_told = next(at for at, line in told if line.startswith("waiting: "))
    assert ended - first_told > 1.5

    # The log holds each attempt at the time it was sent, though both were committed together.
    shown = json.loads(saga_cli("show", stdout.split()[1].rstrip(":"), "--db", str(log), "--json").stdout)
    credits = [event for event in shown["history"] if event.get("step") == "credit"]
    compensating = next(event for event in shown["history"] if event.get("state") == "COMPENSATING")
    assert [event["error"] for event in credits] == ["timeout", "timeout"]
    assert credits[1]["at_ms"] - credits[0]["at_ms"] >= 1_500
    assert compensating["at_ms"] - credits[0]["at_ms"] >= 3_000


def test_recover_names_each_saga_it_waits_on_and_reads_saga_db(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0}, credit_fault_rate=1.0)
    log = str(tmp_path / "saga.db")
    submitted = saga_with_env(
        "submit", "--from", "alice", "--to", "bob", "--amount", "10", "--url", server.url, SAGA_DB=log
    )
    assert submitted.returncode == 0, submitted.stderr
    transaction_id = submitted.stdout.strip()
    recovered = saga_with_env("recover", "--max-credit-attempts", "2", SAGA_DB=log)
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout.splitlines() == [f"COMPENSATED {transaction_id}", "recovered 1 sagas"]
    (line,) = waiting(recovered.stderr)
    assert re.fullmatch(
        rf"waiting: saga {transaction_id}: credit attempt 1 of 2 failed \(500 injected_fault\); {BACKOFF}", line
    )
    quiet = saga_with_env("recover", "--quiet", SAGA_DB=log)
    assert (quiet.returncode, quiet.stdout, waiting(quiet.stderr)) == (0, "", [])


def test_a_transfer_with_nothing_to_wait_on_says_nothing(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0})
    run = saga_cli(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--url", server.url,
        "--db", str(tmp_path / "saga.db"), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert json.loads(run.stdout)["state"] == "COMPLETED"


# -- show and list: times, send times, idempotency keys, and the choice of sagas ----------------


def test_show_and_list_give_iso_times_and_the_idempotency_key(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server({"alice": 1_000, "bob": 0, "carol": 0})
    log = str(tmp_path / "saga.db")
    keyed = saga_with_env(
        "submit", "--from", "alice", "--to", "carol", "--amount", "7", "--url", server.url,
        "--idempotency-key", "order-8812", SAGA_DB=log,
    )  # fmt: skip
    assert keyed.returncode == 0, keyed.stderr
    keyed_id = keyed.stdout.strip()
    assert saga_with_env("recover", SAGA_DB=log).returncode == 0
    plain = saga_with_env(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--url", server.url, "--json", SAGA_DB=log
    )
    plain_id = json.loads(plain.stdout)["transaction_id"]

    shown = saga_with_env("show", keyed_id, SAGA_DB=log)
    assert shown.returncode == 0, shown.stderr
    header, key, *events = shown.stdout.splitlines()
    assert header == f"{keyed_id}: COMPLETED, 7 from alice@{server.url} to carol@{server.url}"
    assert key == "  idempotency key 'order-8812', submitted by -"
    assert all(re.match(rf"  {ISO}  ", event) for event in events), events
    credit = rf"  {ISO}  credit attempt 1: 200 in [0-9.]+ ms at {re.escape(server.url)} \(ledger \S+\)"
    assert any(re.fullmatch(credit, event) for event in events), events
    assert saga_with_env("show", plain_id, SAGA_DB=log).stdout.splitlines()[1] == (
        "  idempotency key -, submitted by -"
    )

    as_json = json.loads(saga_with_env("show", keyed_id, "--json", SAGA_DB=log).stdout)
    assert (as_json["idempotency_key"], as_json["submitted_by"]) == ("order-8812", None)
    assert re.fullmatch(ISO, as_json["created_at"])
    for event in as_json["history"]:
        seconds, milliseconds = divmod(event["at_ms"], 1000)
        assert event["at"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milliseconds:03d}Z"

    keyed_line, plain_line, count = saga_with_env("list", SAGA_DB=log).stdout.splitlines()
    assert keyed_line == (
        f"{keyed_id}  {as_json['created_at']}  COMPLETED               7  alice@{server.url} -> carol@{server.url}"
    )
    assert re.fullmatch(rf"{plain_id}  {ISO}  COMPLETED               5  alice@\S+ -> bob@\S+", plain_line)
    assert count == "2 sagas"
    listed = json.loads(saga_with_env("list", "--json", SAGA_DB=log).stdout)
    assert {saga["transaction_id"]: saga["idempotency_key"] for saga in listed} == {
        keyed_id: "order-8812",
        plain_id: None,
    }
    carols = saga_with_env("list", "--account", "carol", "--limit", "5", SAGA_DB=log)
    assert [line.split()[0] for line in carols.stdout.splitlines()] == [keyed_id, "1"]
    newest = saga_with_env("list", "--limit", "1", SAGA_DB=log)
    assert [line.split()[0] for line in newest.stdout.splitlines()] == [plain_id, "1"]


def test_list_refuses_what_only_the_transfers_service_does(tmp_path: Path) -> None:
    log = str(tmp_path / "saga.db")
    after = saga_with_env("list", "--after", "abc", "--db", log)
    assert (after.returncode, after.stderr) == (
        2,
        "error: --after pages through the transfers service (--api); a log lists the newest with --limit\n",
    )
    account = saga_with_env("list", "--account", "alice", "--api", dead_url())
    assert account.returncode == 2
    assert account.stderr == "error: --account reads a saga log (--db): the transfers service lists by state only\n"


# -- a reader that stops early --------------------------------------------------------------------


def a_log_of_many_sagas(path: Path, count: int) -> None:
    """``count`` sagas submitted at once: more lines than a pipe holds."""

    async def fill() -> None:
        log = await SqliteSagaLog.open(path)
        try:
            accounts = AccountRef(dead_url(), "alice"), AccountRef(dead_url(), "bob")
            await asyncio.gather(*(submit(log, *accounts, amount) for amount in range(1, count + 1)))
        finally:
            await log.close()

    asyncio.run(fill())


@pytest.mark.parametrize("options", [[], ["--json"]], ids=["lines", "json"])
def test_a_listing_whose_reader_stops_early_ends_quietly(tmp_path: Path, options: list[str]) -> None:
    log = tmp_path / "saga.db"
    a_log_of_many_sagas(log, 1_500)
    process = start_saga("list", "--db", str(log), *options)
    try:
        assert process.stdout is not None
        assert process.stdout.read(10)
        # The reader goes away with most of the listing unread.
        process.stdout.close()
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_transfer_whose_reader_left_still_exits_with_its_own_status(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server({"alice": 1_000, "bob": 0}, credit_fault_rate=1.0)
    transfer = saga_command(
        "transfer", "--from", "alice", "--to", "bob", "--amount", "3", "--url", server.url,
        "--db", str(tmp_path / "saga.db"),
    )  # fmt: skip
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run(
            transfer,
            stdout=write,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "Error" not in run.stderr
