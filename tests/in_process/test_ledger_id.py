"""Every answer of a contract operation names its ledger; durable stores keep their id, a new memory store does not."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from server import Settings, create_app
from server.stores.memory import MemoryStore
from server.stores.sqlite import SqliteStore
from tests.support.aio import run
from tests.support.inprocess import asgi_client

ACCOUNTS = {"alice": 1_000, "bob": 0}


async def answers(store: MemoryStore, token: str | None = None) -> list[httpx.Response]:
    settings = Settings(accounts=ACCOUNTS, credit_fault_rate=1.0, log_requests=False, token=token)
    app = create_app(settings, store)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with asgi_client(app) as client:
        body = {"user_id": "alice", "amount": 5}
        return [
            await client.post("/debit", json=body, headers={"transaction_id": "t1", **auth}),
            await client.post("/debit", json=body, headers={"transaction_id": "t1", **auth}),
            await client.post(
                "/debit", json={"user_id": "alice", "amount": 10**6}, headers={"transaction_id": "t2", **auth}
            ),
            await client.post("/debit", json={"user_id": "zed", "amount": 5}, headers={"transaction_id": "t3", **auth}),
            await client.post(
                "/credit", json={"user_id": "bob", "amount": 5}, headers={"transaction_id": "t4", **auth}
            ),
            await client.post("/debit", json={"user_id": "alice"}, headers={"transaction_id": "t5", **auth}),
            await client.post("/debit", json=body, headers=auth),
            await client.post("/debit", content=b"x" * 70_000, headers={"transaction_id": "t6", **auth}),
            await client.get("/accounts", headers={"transaction_id": "r", **auth}),
            await client.get("/accounts/alice", headers={"transaction_id": "r", **auth}),
            await client.get("/transactions/t1", headers={"transaction_id": "r", **auth}),
            await client.get("/accounts", headers={"transaction_id": "r"}),
        ]


def test_every_answer_of_every_contract_operation_names_the_ledger() -> None:
    store = MemoryStore.create(ACCOUNTS)
    responses = run(answers(store, token="s3cret"))
    statuses = sorted({response.status_code for response in responses})
    assert statuses == [200, 400, 401, 404, 409, 413, 422, 500]
    for response in responses:
        assert response.headers["ledger-id"] == store.ledger_id, (response.status_code, response.text)
    uuid.UUID(store.ledger_id)


def test_health_is_outside_the_contract_and_carries_no_ledger_id() -> None:
    async def health() -> httpx.Response:
        async with asgi_client(create_app(Settings(accounts=ACCOUNTS, log_requests=False))) as client:
            return await client.get("/healthz")

    assert "ledger-id" not in run(health()).headers


def test_each_new_memory_store_is_a_new_ledger_and_a_reload_keeps_its_id() -> None:
    first, second = MemoryStore.create(ACCOUNTS), MemoryStore.create(ACCOUNTS)
    assert first.ledger_id != second.ledger_id
    kept = first.ledger_id
    first.reload()
    assert first.ledger_id == kept


def test_an_sqlite_ledger_keeps_its_id_across_reopens_and_another_file_has_another(tmp_path: Path) -> None:
    async def ids() -> tuple[str, str, str]:
        stores = []
        for path in (tmp_path / "a.db", tmp_path / "a.db", tmp_path / "b.db"):
            store = await SqliteStore.open(path, ACCOUNTS)
            stores.append(store.ledger_id)
            await store.close()
        return stores[0], stores[1], stores[2]

    first, reopened, other = run(ids())
    assert first == reopened
    assert other != first


def test_an_unexpected_error_names_the_ledger_too(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore.create(ACCOUNTS)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store.ledger, "apply", fail)

    async def call() -> httpx.Response:
        app = create_app(Settings(accounts=ACCOUNTS, log_requests=False), store)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as client:
            return await client.post("/debit", json={"user_id": "alice", "amount": 1}, headers={"transaction_id": "t"})

    response = run(call())
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["ledger-id"] == store.ledger_id
