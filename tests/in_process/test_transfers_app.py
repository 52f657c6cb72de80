"""The transfers service's HTTP adapter in process, over a memory saga log: what each route answers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from saga.deadlines import iso_time
from saga.directory import ServiceDirectory
from saga.ledger_watch import REFRESH_SECONDS
from saga.ledgers import Quarantine
from saga.logs import MemorySagaLog, SagaLogError
from saga.records import Attempt, Change
from saga.service import TransfersSettings, create_transfers_app
from saga.service.app import decode_cursor, encode_cursor
from saga.service.waiting import EndWatch
from saga.states import SagaState
from tests.support.aio import run
from tests.support.inprocess import asgi_client

BANK_A = "http://127.0.0.1:9101"
BANK_B = "http://127.0.0.1:9102"


def directory() -> ServiceDirectory:
    return ServiceDirectory({"bank-a": (BANK_A,), "bank-b": (BANK_B,)})


def body(amount: int = 2_500, source: str = "bank-a", target: str = "bank-b") -> dict[str, Any]:
    return {
        "source": {"service": source, "user_id": "alice"},
        "target": {"service": target, "user_id": "bob"},
        "amount": amount,
    }


Scenario = Callable[[httpx.AsyncClient, MemorySagaLog, EndWatch], Awaitable[Any]]


async def with_app(scenario: Scenario, tokens: dict[str, str] | None = None, log: MemorySagaLog | None = None) -> Any:
    log = log or MemorySagaLog(exclusive=True)
    watch = EndWatch(log, poll_seconds=0.02)
    app = create_transfers_app(TransfersSettings(directory=directory(), api_tokens=tokens or {}), log, watch=watch)
    try:
        async with asgi_client(app) as client:
            return await scenario(client, log, watch)
    finally:
        await watch.close()


async def submit(client: httpx.AsyncClient, key: str, payload: dict[str, Any] | None = None) -> httpx.Response:
    return await client.post("/transfers", headers={"Idempotency-Key": key}, json=payload or body())


def test_a_submission_is_recorded_pending_under_a_minted_id_and_answered_201_with_its_location() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await submit(client, "order-1")
        assert response.status_code == 201
        shown = response.json()
        assert response.headers["location"] == f"/transfers/{shown['transaction_id']}"
        assert shown["transaction_id"] != "order-1"
        assert shown["state"] == "PENDING"
        assert shown["idempotency_key"] == "order-1"
        assert shown["source"] == {"service": "bank-a", "user_id": "alice"}
        record = await log.get(shown["transaction_id"])
        assert record is not None
        assert record.source.urls == (BANK_A,)
        assert record.source.service == "bank-a"
        assert record.target.urls == (BANK_B,)
        assert record.target.service == "bank-b"
        assert record.amount == 2_500

    run(with_app(scenario))


def test_the_same_key_and_body_answers_200_replayed_and_records_nothing_more() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        first = await submit(client, "order-1")
        again = await submit(client, "order-1")
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["transaction_id"] == first.json()["transaction_id"]
        assert len(await log.sagas()) == 1

    run(with_app(scenario))


def test_the_same_key_with_another_body_is_422_and_records_nothing() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        await submit(client, "order-1")
        reused = await submit(client, "order-1", body(amount=2_501))
        assert reused.status_code == 422
        assert reused.headers["content-type"] == "application/problem+json"
        assert reused.json()["code"] == "idempotency_key_reused"
        assert len(await log.sagas()) == 1

    run(with_app(scenario))


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_idempotency_key"),
        ({"Idempotency-Key": "k" * 256}, "invalid_idempotency_key"),
        ({"Idempotency-Key": "tab\there"}, "invalid_idempotency_key"),
    ],
)
def test_a_missing_or_malformed_key_is_400_and_records_nothing(headers: dict[str, str], code: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.post("/transfers", headers=headers, json=body())
        assert response.status_code == 400
        assert response.json()["code"] == code
        assert await log.sagas() == []

    run(with_app(scenario))


def test_two_idempotency_key_headers_are_refused() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.post(
            "/transfers", headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")], json=body()
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_idempotency_key"
        assert await log.sagas() == []

    run(with_app(scenario))


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (body(source="bank-c"), "unknown_service"),
        (body(source=BANK_A), "invalid_request"),
        (body(amount=0), "invalid_request"),
        (body(amount=10**12 + 1), "invalid_request"),
        ({**body(), "source_url": BANK_A}, "invalid_request"),
        (
            {
                "source": {"service": "bank-a", "user_id": "alice"},
                "target": {"service": "bank-a", "user_id": "alice"},
                "amount": 5,
            },
            "invalid_request",
        ),
    ],
)
def test_a_transfer_the_service_cannot_run_is_422_with_its_code_and_records_nothing(
    payload: dict[str, Any], code: str
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await submit(client, "k", payload)
        assert response.status_code == 422
        assert response.json()["code"] == code
        assert await log.sagas() == []

    run(with_app(scenario))


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [(b"2500.0", True), (b"1e3", True), (b"999.99999999999999999", False), (b"2500.5", False), (b'"2500"', False)],
)
def test_an_amount_is_taken_only_when_its_exact_value_is_a_whole_number(raw: bytes, accepted: bool) -> None:
    content = (
        b'{"source":{"service":"bank-a","user_id":"alice"},"target":{"service":"bank-b","user_id":"bob"},"amount":'
        + raw
        + b"}"
    )

    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.post(
            "/transfers", headers={"Idempotency-Key": "k", "content-type": "application/json"}, content=content
        )
        assert response.status_code == (201 if accepted else 422)
        assert len(await log.sagas()) == (1 if accepted else 0)

    run(with_app(scenario))


def test_a_key_repeated_in_the_json_body_is_refused() -> None:
    content = (
        b'{"source":{"service":"bank-a","user_id":"alice"},"target":{"service":"bank-b","user_id":"bob"},'
        b'"amount":1,"amount":900}'
    )

    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.post(
            "/transfers", headers={"Idempotency-Key": "k", "content-type": "application/json"}, content=content
        )
        assert response.status_code == 422
        assert "more than once" in response.json()["detail"]
        assert await log.sagas() == []

    run(with_app(scenario))


def test_an_unknown_transfer_is_404_unknown_transfer() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        for path in ("/transfers/nope", "/transfers/nope/events"):
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["code"] == "unknown_transfer"

    run(with_app(scenario))


def test_a_wait_returns_as_soon_as_the_saga_ends() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        transaction_id = (await submit(client, "k")).json()["transaction_id"]

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            await log.commit(Change(transaction_id, 1, state=SagaState.COMPLETED))
            watch.ended(transaction_id)

        started = time.monotonic()
        finisher = asyncio.create_task(finish_later())
        response = await client.get(f"/transfers/{transaction_id}", params={"wait": 30})
        await finisher
        assert response.json()["state"] == "COMPLETED"
        assert time.monotonic() - started < 10

    run(with_app(scenario))


def test_a_wait_sees_a_saga_another_process_ended_through_the_log() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        transaction_id = (await submit(client, "k")).json()["transaction_id"]

        async def finish_elsewhere() -> None:
            await asyncio.sleep(0.2)
            # No call to watch.ended: only the poller can notice.
            await log.commit(Change(transaction_id, 1, state=SagaState.FAILED, error="unknown_user"))

        started = time.monotonic()
        finisher = asyncio.create_task(finish_elsewhere())
        response = await client.get(f"/transfers/{transaction_id}", params={"wait": 30})
        await finisher
        assert response.json()["state"] == "FAILED"
        assert response.json()["last_error"] == "unknown_user"
        assert time.monotonic() - started < 10

    run(with_app(scenario))


def test_a_wait_for_a_saga_that_does_not_end_returns_it_unfinished_when_the_time_is_up() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        transaction_id = (await submit(client, "k")).json()["transaction_id"]
        started = time.monotonic()
        response = await client.get(f"/transfers/{transaction_id}", params={"wait": 1})
        assert response.status_code == 200
        assert response.json()["state"] == "PENDING"
        assert 0.9 < time.monotonic() - started < 10
        assert watch._waiters == {}

    run(with_app(scenario))


@pytest.mark.parametrize("wait", ["31", "-1", "1.5", "x"])
def test_a_wait_outside_0_to_30_whole_seconds_is_422(wait: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        transaction_id = (await submit(client, "k")).json()["transaction_id"]
        response = await client.get(f"/transfers/{transaction_id}", params={"wait": wait})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    run(with_app(scenario))


def test_pages_list_newest_first_and_their_cursors_visit_every_transfer_once() -> None:
    clock = iter(range(1_000, 2_000))

    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        ids = []
        for number in range(7):
            ids.append((await submit(client, f"k{number}", body(amount=number + 1))).json()["transaction_id"])
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if after is not None:
                params["after"] = after
            page = (await client.get("/transfers", params=params)).json()
            pages += 1
            seen += [item["transaction_id"] for item in page["transfers"]]
            after = page["next"]
            if after is None:
                break
        assert seen == list(reversed(ids))
        assert pages == 3

    async def with_clock() -> None:
        log = MemorySagaLog(exclusive=True)
        watch = EndWatch(log)
        app = create_transfers_app(
            TransfersSettings(directory=directory()), log, watch=watch, clock_ms=lambda: next(clock)
        )
        async with asgi_client(app) as client:
            await scenario(client, log, watch)

    run(with_clock())


def test_a_state_filter_lists_only_that_state() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        first = (await submit(client, "k1")).json()["transaction_id"]
        await submit(client, "k2")
        await log.commit(Change(first, 5, state=SagaState.COMPLETED))
        page = (await client.get("/transfers", params={"state": "COMPLETED"})).json()
        assert [item["transaction_id"] for item in page["transfers"]] == [first]
        assert page["next"] is None

    run(with_app(scenario))


@pytest.mark.parametrize(
    "params",
    [{"limit": "501"}, {"limit": "0"}, {"after": "not a cursor!"}, {"after": "bm90LW91cnM"}, {"state": "DONE"}],
)
def test_a_bad_page_request_is_422(params: dict[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.get("/transfers", params=params)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    run(with_app(scenario))


def test_a_cursor_stands_for_the_creation_time_and_id_of_the_last_transfer_of_a_page() -> None:
    from saga.records import AccountRef, SagaRecord

    record = SagaRecord(
        "3f2b8c1e-8d4a", AccountRef(BANK_A, "alice"), AccountRef(BANK_B, "bob"), 5, created_at_ms=1_764_000_000_123
    )
    cursor = encode_cursor(record)
    assert "=" not in cursor
    assert decode_cursor(cursor) == (1_764_000_000_123, "3f2b8c1e-8d4a")
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == b"1764000000123.3f2b8c1e-8d4a"


def test_times_are_iso_8601_in_utc_to_the_millisecond() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_764_749_730_125) == "2025-12-03T08:15:30.125Z"


def test_the_events_are_the_logs_history_with_each_attempts_service_by_name() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        transaction_id = (await submit(client, "k")).json()["transaction_id"]
        (claimed,) = await log.claim("worker-1", limit=1, lease_ms=10_000, now_ms=2)
        debit = Attempt("debit", 1, 200, None, 1_500, url=BANK_A, ledger_id="ledger-a")
        credit = Attempt("credit", 1, 500, "injected_fault", 900, url=BANK_B, ledger_id="ledger-b")
        await log.commit(
            Change(transaction_id, 3, state=SagaState.CREDITING, attempts=[debit], epoch=1, owner="worker-1")
        )
        await log.commit(
            Change(transaction_id, 4, attempts=[credit], error="injected_fault", epoch=1, owner="worker-1")
        )
        events = (await client.get(f"/transfers/{transaction_id}/events")).json()["events"]
        assert [event["kind"] for event in events] == ["state", "claim", "attempt", "state", "attempt"]
        assert events[1] == {"at": iso_time(2), "kind": "claim", "worker": "worker-1", "epoch": 1}
        assert events[2]["service"] == "bank-a"
        assert events[2]["ledger_id"] == "ledger-a"
        assert events[2]["latency_us"] == 1_500
        assert events[2]["status"] == 200
        assert events[4]["service"] == "bank-b"
        assert events[4]["code"] == "injected_fault"
        assert events[3]["state"] == "CREDITING"
        assert claimed.epoch == 1

    run(with_app(scenario))


def test_with_api_tokens_every_route_but_health_needs_one_and_the_caller_is_recorded() -> None:
    tokens = {"payments": "s3cret-payments", "payouts": "s3cret-payouts"}

    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        for path in ("/transfers", "/metrics", "/transfers/x"):
            refused = await client.get(path)
            assert refused.status_code == 401
            assert refused.json()["code"] == "unauthorized"
        for path in ("/healthz", "/readyz"):
            assert (await client.get(path)).status_code == 200
        wrong = await client.post(
            "/transfers", headers={"Idempotency-Key": "k", "Authorization": "Bearer nope"}, json=body()
        )
        assert wrong.status_code == 401
        two = await client.get(
            "/transfers",
            headers=[("Authorization", "Bearer s3cret-payments"), ("Authorization", "Bearer s3cret-payments")],
        )
        assert two.status_code == 401
        assert await log.sagas() == []
        created = await client.post(
            "/transfers", headers={"Idempotency-Key": "k", "Authorization": "bearer s3cret-payments"}, json=body()
        )
        assert created.status_code == 201
        assert created.json()["submitted_by"] == "payments"
        other_caller = await client.post(
            "/transfers", headers={"Idempotency-Key": "k", "Authorization": "Bearer s3cret-payouts"}, json=body()
        )
        assert other_caller.status_code == 422
        assert other_caller.json()["code"] == "idempotency_key_reused"
        assert len(await log.sagas()) == 1

    run(with_app(scenario, tokens))


def test_two_callers_with_one_token_are_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="same token"):
        TransfersSettings(directory=directory(), api_tokens={"a": "same", "b": "same"})


class BrokenLog(MemorySagaLog):
    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        raise SagaLogError("the saga log at test failed: connection refused")

    async def submit(self, saga: Any) -> Any:
        raise SagaLogError("the saga log at test failed: connection refused")


def test_readiness_and_submissions_answer_503_log_unavailable_while_the_log_fails() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        assert (await client.get("/healthz")).status_code == 200
        for response in (await client.get("/readyz"), await submit(client, "k")):
            assert response.status_code == 503
            assert response.json()["code"] == "log_unavailable"
            assert response.headers["retry-after"] == "1"

    run(with_app(scenario, log=BrokenLog(exclusive=True)))


def test_metrics_count_requests_by_operation_status_and_code() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        await submit(client, "k")
        await submit(client, "k")
        await client.post("/transfers", json=body())
        text = (await client.get("/metrics")).text
        assert 'transfers_api_requests_total{code="",operation="createTransfer",status="201"} 1.0' in text
        assert 'transfers_api_requests_total{code="",operation="createTransfer",status="200"} 1.0' in text
        assert (
            'transfers_api_requests_total{code="missing_idempotency_key",operation="createTransfer",status="400"} 1.0'
            in text
        )

    run(with_app(scenario))


def test_the_service_serves_its_committed_contract() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        document = (await client.get("/openapi.json")).json()
        assert document["info"]["title"] == "Transfers service"
        assert set(document["paths"]) >= {
            "/transfers",
            "/transfers/{transaction_id}",
            "/transfers/{transaction_id}/events",
        }

    run(with_app(scenario))


@pytest.mark.parametrize("path", ["/transfers/a%2Fb", "/transfers/a%0A", "/transfers/a%2Fb/events", "/transfers/%20"])
def test_an_id_no_transfer_can_have_is_422_not_an_unrouted_404(path: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.get(path)
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"

    run(with_app(scenario))


def test_two_transaction_id_headers_mean_nothing_to_the_transfers_service() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        response = await client.post(
            "/transfers",
            headers=[("Idempotency-Key", "k"), ("transaction_id", "a"), ("transaction_id", "b")],
            json=body(),
        )
        assert response.status_code == 201

    run(with_app(scenario))


def test_a_transfer_naming_a_quarantined_service_is_409_and_records_nothing_until_an_operator_accepts() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog, watch: EndWatch) -> None:
        await log.quarantine(Quarantine("bank-b", "its ledger went back from position 90 to 40", 1))
        refused = await submit(client, "order-1")
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["code"] == "service_quarantined"
        assert "bank-b" in problem["detail"]
        assert "went back from position 90 to 40" in problem["detail"]
        assert await log.sagas() == []
        await log.accept("bank-b", "reconciled by hand", 2)
        # The app rereads the quarantines at most a second apart.
        await asyncio.sleep(REFRESH_SECONDS)
        accepted = await submit(client, "order-1")
        assert accepted.status_code == 201

    run(with_app(scenario))
