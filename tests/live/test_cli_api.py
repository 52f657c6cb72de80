"""The CLI through the transfers service (--api), and services found by name when their URLs change."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga.logs import SqliteSagaLog
from saga.records import AccountRef
from saga.service.process import TransfersProcess
from saga.submission import submit
from server.process import REPO_ROOT
from tests.conftest import StartServer
from tests.support.cli import saga_cli, saga_command
from tests.support.ports import dead_url


@pytest.fixture
def transfers(start_server: StartServer) -> Iterator[TransfersProcess]:
    bank_a, bank_b = start_server(), start_server()
    with TransfersProcess({"bank-a": bank_a.url, "bank-b": bank_b.url}) as service:
        yield service


def test_submit_with_wait_show_list_and_events_go_through_the_api(transfers: TransfersProcess) -> None:
    api = ["--api", transfers.url]
    submitted = saga_cli(
        "submit", "--from", "bank-a:alice", "--to", "bank-b:bob", "--amount", "250", "--wait", "--json", *api
    )
    assert submitted.returncode == 0, submitted.stderr
    shown = json.loads(submitted.stdout)
    assert shown["state"] == "COMPLETED"
    assert shown["source"] == {"service": "bank-a", "user_id": "alice"}
    assert shown["idempotency_key"].startswith("cli-")
    transaction_id = shown["transaction_id"]

    show = saga_cli("show", transaction_id, *api)
    assert show.returncode == 0, show.stderr
    assert f"COMPLETED {transaction_id}: 250 from bank-a:alice to bank-b:bob" in show.stdout
    assert "debit attempt 1: 200" in show.stdout
    assert "Z  -> COMPLETED" in show.stdout

    listing = saga_cli("list", "--json", *api)
    assert [item["transaction_id"] for item in json.loads(listing.stdout)["transfers"]] == [transaction_id]

    events = saga_cli("events", transaction_id, "--json", *api)
    kinds = [event["kind"] for event in json.loads(events.stdout)["events"]]
    assert kinds[0] == "state"
    assert kinds.count("attempt") >= 2


def test_the_same_key_gives_the_same_transfer_and_another_body_under_it_is_refused(
    transfers: TransfersProcess,
) -> None:
    env = {**os.environ, "SAGA_API": transfers.url}

    def submit_cli(amount: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            saga_command(
                "submit", "--from", "bank-a:alice", "--to", "bank-b:bob", "--amount", amount, "--idempotency-key", "k1"
            ),
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    first, again, other = submit_cli("100"), submit_cli("100"), submit_cli("101")
    assert first.returncode == 0, first.stderr
    assert again.stdout == first.stdout
    assert other.returncode == 2
    assert "422 idempotency_key_reused" in other.stderr
    listing = subprocess.run(
        saga_command("list"), capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60, check=False
    )
    assert listing.stdout.strip().endswith("1 transfers")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "alice", "--to", "bank-b:bob"], "SERVICE:USER_ID"),
        (["--from", "bank-a:alice", "--to", "bank-z:bob"], "422 unknown_service"),
        (["--from", "bank-a:alice", "--to", "bank-b:bob", "--url", "http://127.0.0.1:1"], "no URL"),
    ],
)
def test_a_submission_the_api_cannot_take_is_one_line_and_exit_2(
    transfers: TransfersProcess, args: list[str], message: str
) -> None:
    result = saga_cli("submit", "--api", transfers.url, "--amount", "5", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_api_is_one_line_and_exit_2() -> None:
    result = saga_cli("list", "--api", dead_url())
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the transfers service at")


def test_a_listing_read_by_a_closed_pipe_ends_quietly(transfers: TransfersProcess) -> None:
    for _ in range(3):
        saga_cli("submit", "--api", transfers.url, "--from", "bank-a:alice", "--to", "bank-b:bob", "--amount", "1")
    pipeline = subprocess.run(
        f"{' '.join(saga_command('list', '--api', transfers.url))} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert len(pipeline.stdout.splitlines()) == 1
    assert pipeline.stderr == ""


def test_a_saga_logged_at_old_urls_is_driven_at_the_urls_its_service_name_has_now(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A bank moved to new replicas: recover sends to the new URLs it is given for the name."""
    bank_a, bank_b = start_server(), start_server()
    log_file = tmp_path / "saga.db"

    async def submit_at_old_urls() -> str:
        log = await SqliteSagaLog.open(log_file)
        try:
            return await submit(
                log, AccountRef(dead_url(), "alice", "bank-a"), AccountRef(dead_url(), "bob", "bank-b"), 300
            )
        finally:
            await log.close()

    transaction_id = asyncio.run(submit_at_old_urls())
    recovered = saga_cli(
        "recover",
        "--db",
        str(log_file),
        "--service",
        f"bank-a={bank_a.url}",
        "--service",
        f"bank-b={bank_b.url}",
        "--json",
    )
    assert recovered.returncode == 0, recovered.stderr
    (result,) = json.loads(recovered.stdout)["recovered"]
    assert result["transaction_id"] == transaction_id
    assert result["state"] == "COMPLETED"
    events = json.loads(saga_cli("events", transaction_id, "--db", str(log_file), "--json").stdout)["events"]
    attempts = [event for event in events if event["kind"] == "attempt"]
    assert {event["service"] for event in attempts} == {"bank-a", "bank-b"}
    assert all(event["status"] == 200 for event in attempts)
