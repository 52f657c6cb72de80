"""GET /metrics on a live accounts service, and its JSON log lines."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from server import Settings, create_app
from server.stores.sqlite import SqliteStore
from tests.conftest import StartServer
from tests.support.inprocess import asgi_client, ledger_call
from tests.support.metrics import label_values, parse, scrape, value


def post(url: str, operation: str, transaction_id: str, user_id: str, amount: int, token: str | None = None) -> int:
    headers = {"transaction_id": transaction_id}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer = httpx.post(f"{url}/{operation}", headers=headers, json={"user_id": user_id, "amount": amount}, timeout=10)
    return answer.status_code


def test_metrics_count_requests_outcomes_faults_and_store_calls_by_replica(start_server: StartServer) -> None:
    token = "metrics-secret"
    server = start_server(
        {"alice": 1_000, "bob": 0},
        credit_fault_rate=1.0,
        token=token,
        log_level="info",
        extra_args=["--replica-id", "replica-7"],
    )
    auth = {"Authorization": f"Bearer {token}"}

    assert post(server.url, "debit", "t1", "alice", 100, token) == 200
    assert post(server.url, "debit", "t1", "alice", 100, token) == 200  # a replay
    assert post(server.url, "debit", "t2", "alice", 5_000, token) == 409  # insufficient funds
    assert post(server.url, "credit", "t1", "bob", 100, token) == 500  # every credit faults
    assert post(server.url, "compensate_credit", "t1", "bob", 100, token) == 200  # voids the credit
    assert post(server.url, "compensate_debit", "t1", "alice", 100, token) == 200  # reverses the debit
    assert post(server.url, "debit", "t3", "alice", 1) == 401  # no token
    assert httpx.get(f"{server.url}/no/such/path", headers=auth, timeout=10).status_code == 404

    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
    samples = scrape(f"{server.url}/metrics", auth)

    assert label_values(samples, "accounts_requests_total", "replica_id") == {"replica-7"}
    assert value(samples, "accounts_requests_total", operation="debit", status="200", code="") == 2
    assert value(samples, "accounts_requests_total", operation="debit", status="409", code="insufficient_funds") == 1
    assert value(samples, "accounts_requests_total", operation="debit", status="401", code="unauthorized") == 1
    assert value(samples, "accounts_requests_total", operation="credit", status="500", code="injected_fault") == 1
    assert value(samples, "accounts_requests_total", operation="compensate_credit", status="200") == 1
    # An unknown path is one bounded label, not a series of its own.
    assert value(samples, "accounts_requests_total", operation="other", status="404") == 1

    assert value(samples, "accounts_ledger_outcomes_total", operation="debit", outcome="applied") == 1
    assert value(samples, "accounts_ledger_outcomes_total", operation="debit", outcome="replayed") == 1
    assert (
        value(
            samples, "accounts_ledger_outcomes_total", operation="debit", outcome="rejected", code="insufficient_funds"
        )
        == 1
    )
    assert value(samples, "accounts_ledger_outcomes_total", operation="compensate_credit", outcome="voided") == 1
    assert value(samples, "accounts_ledger_outcomes_total", operation="compensate_debit", outcome="reversed") == 1
    assert value(samples, "accounts_injected_faults_total", when="before_commit") == 1

    # Every request is timed, the refused one included; the replay too.
    assert value(samples, "accounts_request_duration_seconds_count", operation="debit") == 4
    assert value(samples, "accounts_request_duration_seconds_count", operation="credit") == 1
    # Every ledger request the token let through reached the store once: the faulted credit too, to look for a replay.
    assert value(samples, "accounts_store_duration_seconds_count", store="memory", call="execute") == 6
    assert value(samples, "accounts_store_errors_total") == 0

    # Every log line is one JSON object naming the replica, with the transaction_id it concerns.
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert lines
    assert all(line["replica_id"] == "replica-7" and "transaction_id" in line for line in lines)
    assert [line["outcome"] for line in lines if line["transaction_id"] == "t1"][:2] == ["applied", "applied"]


def test_metrics_public_serves_metrics_without_the_token_and_still_guards_the_ledger(
    start_server: StartServer,
) -> None:
    server = start_server({"alice": 10}, token="s3cret", extra_args=["--metrics-public"])
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/accounts", headers={"transaction_id": "r1"}, timeout=10).status_code == 401


def test_log_format_text_writes_readable_lines(start_server: StartServer) -> None:
    server = start_server({"alice": 10}, log_level="info", extra_args=["--log-format", "text", "--replica-id", "r-1"])
    assert post(server.url, "debit", "text-1", "alice", 1) == 200
    lines = [line for line in server.log().splitlines() if "text-1" in line]
    assert len(lines) == 1
    assert not lines[0].startswith("{")
    for field in ("transaction_id=text-1", "replica_id=r-1", "outcome=applied"):
        assert field in lines[0]


def test_a_database_that_fails_is_counted_as_a_store_error(tmp_path: Path) -> None:
    import asyncio
    import sqlite3

    path = tmp_path / "ledger.db"
    settings = Settings(accounts={"alice": 1_000}, credit_fault_rate=0.0, log_requests=False, replica_id="r")

    async def scenario() -> None:
        store = await SqliteStore.open(path, {"alice": 1_000}, busy_timeout=0.1)
        try:
            app = create_app(settings, store)
            async with asgi_client(app) as client:
                other_process = sqlite3.connect(path, isolation_level=None)
                try:
                    # Another writer holds the file's write lock past the store's busy timeout.
                    other_process.execute("BEGIN IMMEDIATE")
                    refused = await client.post("/debit", **ledger_call("t1", amount=100))
                    other_process.execute("ROLLBACK")
                finally:
                    other_process.close()
                assert refused.status_code == 503
                assert (await client.post("/debit", **ledger_call("t1", amount=100))).status_code == 200
                samples = parse((await client.get("/metrics")).text)
        finally:
            await store.close()
        assert value(samples, "accounts_store_errors_total", store="sqlite", call="execute") == 1
        assert value(samples, "accounts_store_duration_seconds_count", store="sqlite", call="execute") == 2
        assert value(samples, "accounts_requests_total", status="503", code="storage_unavailable") == 1

    asyncio.run(scenario())


def test_each_app_has_its_own_registry() -> None:
    first, second = create_app(Settings(replica_id="a")), create_app(Settings(replica_id="b"))
    assert first.state.metrics.registry is not second.state.metrics.registry
