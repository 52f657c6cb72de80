"""The compose file's bank command, run for real: its health check, and its flags on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

from server.settings import load_accounts
from tests.conftest import StartServer
from tests.support.compose import args_of, bind_mounts, command, load


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    services = load()["services"]
    assert isinstance(services, dict)
    return services


def test_the_bank_health_check_passes_on_a_live_server_and_fails_without_one(
    services: dict[str, Any], start_server: StartServer
) -> None:
    _, python, *arguments = services["bank-a-1"]["healthcheck"]["test"]
    assert python == "python"
    server = start_server(token="s3cret")
    healthy = [argument.replace("http://127.0.0.1:8000", server.url) for argument in arguments]
    assert subprocess.run([sys.executable, *healthy], capture_output=True, check=False).returncode == 0
    server.stop()
    assert subprocess.run([sys.executable, *healthy], capture_output=True, check=False).returncode != 0


def test_a_bank_on_postgresql_with_the_files_flags_serves_its_accounts_to_the_token_and_metrics_to_anyone(
    services: dict[str, Any], start_server: StartServer, pg_dsn: str
) -> None:
    bank = services["bank-a-1"]
    args = args_of(services, "bank-a-1", "accounts-service")
    mounts = bind_mounts(bank)
    # Its flags but where it listens (the test server's own port), on a database of the test server.
    words = command(bank)[1:]
    listening = {"--host", "--port"}
    kept = [word for index, word in enumerate(words) if word not in listening and words[index - 1] not in listening]
    local = {args.database: pg_dsn, **{target: str(mount.source) for target, mount in mounts.items()}}
    flags = [local.get(word, word) for word in kept]
    server = start_server(token=args.token, extra_args=flags)
    headers = {"transaction_id": "compose-check"}
    with httpx.Client(base_url=server.url) as client:
        refused = client.get("/accounts", headers=headers)
        listing = client.get("/accounts", headers={**headers, "Authorization": f"Bearer {args.token}"})
        metrics = client.get("/metrics")
    assert refused.status_code == 401
    assert {account["user_id"]: account["balance"] for account in listing.json()["accounts"]} == load_accounts(
        mounts[str(args.accounts)].source
    )
    assert metrics.status_code == 200
    assert "accounts_requests_total" in metrics.text
