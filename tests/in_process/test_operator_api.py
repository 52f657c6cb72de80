"""The operators' operations of the transfers API, in process over a memory log: who may act, on what, what stays."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from saga.deadlines import iso_time
from saga.directory import ServiceDirectory
from saga.logs import MemorySagaLog
from saga.records import AccountRef, Change, SagaRecord
from saga.service import TransfersSettings, create_transfers_app
from saga.service.waiting import EndWatch
from saga.states import SagaState
from tests.support.inprocess import asgi_client

BANK_A = "http://127.0.0.1:9101"
BANK_B = "http://127.0.0.1:9102"
NOW_MS = 1_780_000_000_000
OPERATOR = {"Authorization": "Bearer op-secret"}
CALLER = {"Authorization": "Bearer shop-secret"}

Scenario = Callable[[httpx.AsyncClient, MemorySagaLog], Awaitable[Any]]


def run(scenario: Scenario, *, operators: dict[str, str] | None = None) -> Any:
    async def main() -> Any:
        log = MemorySagaLog(exclusive=True)
        watch = EndWatch(log, poll_seconds=0.02)
        settings = TransfersSettings(
            directory=ServiceDirectory({"bank-a": (BANK_A,), "bank-b": (BANK_B,)}),
            api_tokens={"shop": "shop-secret"},
            operator_tokens={"olga": "op-secret"} if operators is None else operators,
        )
        app = create_transfers_app(settings, log, watch=watch, clock_ms=lambda: NOW_MS)
        try:
            async with asgi_client(app) as client:
                return await scenario(client, log)
        finally:
            await watch.close()

    return asyncio.run(main())


async def saga_in(log: MemorySagaLog, state: SagaState, *, claimed: bool = True, tid: str = "t-1") -> SagaRecord:
    """A saga in ``state``: submitted (epoch 0), then claimed and moved there by a run unless ``claimed`` is False."""
    record = SagaRecord(
        tid,
        AccountRef(BANK_A, "alice", "bank-a"),
        AccountRef(BANK_B, "bob", "bank-b"),
        2_500,
        created_at_ms=NOW_MS - 1_000,
        updated_at_ms=NOW_MS - 1_000,
    )
    await log.submit(record)
    if claimed:
        (held,) = await log.claim("worker-1", limit=1, lease_ms=10_000, now_ms=NOW_MS - 900)
        if state is not SagaState.PENDING:
            await log.commit(Change(tid, NOW_MS - 800, state, epoch=held.epoch, owner=held.owner))
    saved = await log.get(tid)
    assert saved is not None
    assert saved.state is state
    return saved


async def act(client: httpx.AsyncClient, action: str, tid: str = "t-1", **body: Any) -> httpx.Response:
    headers = body.pop("headers", OPERATOR)
    return await client.post(f"/transfers/{tid}/{action}", headers=headers, json=body or {"reason": "INC-7 checked"})


def test_an_unclaimed_transfer_is_cancelled_and_the_action_is_in_its_timeline_for_good() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.PENDING, claimed=False)
        answer = await act(client, "cancel", reason="customer withdrew the order")
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "CANCELLED"
        assert answer.json()["code"] == "cancelled"
        assert await log.claim("worker-1", limit=10, lease_ms=10_000, now_ms=NOW_MS) == []
        events = (await client.get("/transfers/t-1/events", headers=CALLER)).json()["events"]
        (action,) = [event for event in events if event["kind"] == "action"]
        assert action == {
            "at": iso_time(NOW_MS),
            "kind": "action",
            "state": "CANCELLED",
            "action": "cancel",
            "actor": "olga",
            "reason": "customer withdrew the order",
            "worker": None,
            "epoch": 0,
        }

    run(scenario)


def test_a_cancel_asked_again_after_a_lost_answer_is_a_replay_that_records_nothing() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.PENDING, claimed=False)
        assert (await act(client, "cancel")).status_code == 200
        again = await act(client, "cancel")
        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert await log.action_counts() == {"cancel": 1}

    run(scenario)


@pytest.mark.parametrize(
    ("state", "claimed", "code"),
    [
        (SagaState.PENDING, True, "transfer_in_progress"),
        (SagaState.DEBITING, True, "transfer_in_progress"),
        (SagaState.COMPENSATING, True, "transfer_in_progress"),
        (SagaState.COMPLETED, True, "transfer_already_ended"),
    ],
)
def test_a_transfer_a_run_took_up_or_that_ended_is_not_cancelled(state: SagaState, claimed: bool, code: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        before = await saga_in(log, state, claimed=claimed)
        answer = await act(client, "cancel")
        assert answer.status_code == 409
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code
        after = await log.get("t-1")
        assert after is not None
        assert (after.state, after.epoch) == (before.state, before.epoch)
        assert await log.action_counts() == {}

    run(scenario)


def test_a_needs_attention_transfer_is_resolved_with_its_resolution_as_its_code() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.NEEDS_ATTENTION)
        answer = await act(client, "resolve", resolution="moved_by_hand", reason="refund ref 99812")
        assert answer.status_code == 200, answer.text
        assert (answer.json()["state"], answer.json()["code"]) == ("RESOLVED", "moved_by_hand")
        events = (await client.get("/transfers/t-1/events", headers=OPERATOR)).json()["events"]
        assert events[-1]["resolution"] == "moved_by_hand"
        assert events[-1]["reason"] == "refund ref 99812"
        again = await act(client, "resolve", resolution="moved_by_hand", reason="refund ref 99812")
        assert again.headers.get("idempotent-replayed") == "true"
        otherwise = await act(client, "resolve", resolution="nothing_to_move", reason="second look")
        assert otherwise.status_code == 409
        assert otherwise.json()["code"] == "transfer_not_awaiting_operator"

    run(scenario)


@pytest.mark.parametrize("state", [SagaState.PENDING, SagaState.COMPENSATING, SagaState.COMPLETED])
def test_only_a_needs_attention_transfer_is_resolved(state: SagaState) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, state)
        answer = await act(client, "resolve", resolution="nothing_to_move", reason="looked")
        assert answer.status_code == 409
        assert answer.json()["code"] == "transfer_not_awaiting_operator"
        assert state.value in answer.json()["detail"]

    run(scenario)


def test_a_retry_makes_a_waiting_compensation_claimable_now_and_tells_its_driver() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        record = await saga_in(log, SagaState.COMPENSATING)
        await log.release("t-1", record.epoch, not_before_ms=NOW_MS + 60_000)
        assert await log.claim("worker-2", limit=1, lease_ms=10_000, now_ms=NOW_MS) == []
        retried: list[str] = []
        await log.listen(lambda: None, retry=retried.append)
        answer = await act(client, "retry", reason="room made on the account")
        assert answer.status_code == 200
        assert answer.json()["state"] == "COMPENSATING"
        assert retried == ["t-1"]
        assert [saga.transaction_id for saga in await log.claim("w", limit=1, lease_ms=1, now_ms=NOW_MS)] == ["t-1"]

    run(scenario)


@pytest.mark.parametrize("state", [SagaState.PENDING, SagaState.CREDITING, SagaState.NEEDS_ATTENTION])
def test_only_a_compensating_transfer_is_retried(state: SagaState) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, state)
        answer = await act(client, "retry")
        assert answer.status_code == 409
        assert answer.json()["code"] == "transfer_not_retryable"

    run(scenario)


@pytest.mark.parametrize("action", ["cancel", "retry", "resolve"])
def test_a_caller_gets_403_operator_only_and_no_token_401_and_nothing_is_recorded(action: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.NEEDS_ATTENTION)
        body = {"resolution": "nothing_to_move"} if action == "resolve" else {}
        as_caller = await act(client, action, headers=CALLER, reason="x", **body)
        assert as_caller.status_code == 403
        assert as_caller.json()["code"] == "operator_only"
        anonymous = await act(client, action, headers={}, reason="x", **body)
        assert anonymous.status_code == 401
        assert await log.action_counts() == {}

    run(scenario)


def test_without_operator_tokens_no_one_may_act_and_the_detail_says_why() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.PENDING, claimed=False)
        answer = await act(client, "cancel", headers=CALLER)
        assert answer.status_code == 403
        assert "--operator-token" in answer.json()["detail"]

    run(scenario, operators={})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": "two\nlines"},
        {"reason": "x" * 501},
        {"reason": "ok", "extra": 1},
        {"reason": 7},
    ],
)
def test_an_action_without_a_one_line_reason_is_422_and_records_nothing(body: dict[str, Any]) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.PENDING, claimed=False)
        answer = await client.post("/transfers/t-1/cancel", headers=OPERATOR, json=body)
        assert answer.status_code == 422
        assert answer.json()["code"] == "invalid_request"
        saga = await log.get("t-1")
        assert saga is not None
        assert saga.state is SagaState.PENDING

    run(scenario)


def test_a_resolution_must_be_one_the_contract_names() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.NEEDS_ATTENTION)
        answer = await act(client, "resolve", resolution="forgiven", reason="x")
        assert answer.status_code == 422
        missing = await act(client, "resolve", reason="x")
        assert missing.status_code == 422

    run(scenario)


def test_an_action_on_an_unknown_transfer_is_404() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await act(client, "cancel", tid="nope")
        assert answer.status_code == 404
        assert answer.json()["code"] == "unknown_transfer"

    run(scenario)


def submission(deadline: str | int | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "source": {"service": "bank-a", "user_id": "alice"},
        "target": {"service": "bank-b", "user_id": "bob"},
        "amount": 2_500,
    }
    if deadline is not None:
        payload["deadline"] = deadline
    return payload


def test_a_deadline_is_recorded_to_the_millisecond_and_shown_in_utc() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        deadline = iso_time(NOW_MS + 90_000).replace("Z", "+00:00")
        answer = await client.post(
            "/transfers", headers={**CALLER, "Idempotency-Key": "k-1"}, json=submission(deadline)
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["deadline"] == iso_time(NOW_MS + 90_000)
        (saga,) = await log.sagas()
        assert saga.deadline_ms == NOW_MS + 90_000
        in_paris = await client.post(
            "/transfers", headers={**CALLER, "Idempotency-Key": "k-2"}, json=submission("2026-06-01T12:00:00+02:00")
        )
        assert in_paris.json()["deadline"] == "2026-06-01T10:00:00.000Z"

    run(scenario)


@pytest.mark.parametrize(
    "deadline",
    [
        "2026-06-01T12:00:00",  # no time zone
        iso_time(NOW_MS - 1),  # past
        iso_time(NOW_MS),  # now is not ahead
        iso_time(NOW_MS + 366 * 86_400_000),  # more than a year ahead
        "tomorrow",
        1_790_000_000,  # seconds since the epoch: the contract's date-time is a string
        "1790000000",
    ],
)
def test_a_deadline_that_is_not_an_aware_time_within_a_year_ahead_is_422_and_records_nothing(
    deadline: str | int,
) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        answer = await client.post(
            "/transfers", headers={**CALLER, "Idempotency-Key": "k-1"}, json=submission(deadline)
        )
        assert answer.status_code == 422
        assert answer.json()["code"] == "invalid_request"
        assert await log.sagas() == []

    run(scenario)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("action", ["cancel", "retry", "resolve"])
def test_an_action_path_answers_405_allowing_post_alone_to_any_other_method(method: str, action: str) -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        await saga_in(log, SagaState.PENDING, claimed=False)
        answer = await client.request(method, f"/transfers/t-1/{action}", headers=OPERATOR)
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
        saga = await log.get("t-1")
        assert saga is not None
        assert saga.state is SagaState.PENDING

    run(scenario)


def test_a_null_deadline_is_no_deadline() -> None:
    async def scenario(client: httpx.AsyncClient, log: MemorySagaLog) -> None:
        payload = submission(None) | {"deadline": None}
        answer = await client.post("/transfers", headers={**CALLER, "Idempotency-Key": "k-1"}, json=payload)
        assert answer.status_code == 201, answer.text
        assert answer.json()["deadline"] is None

    run(scenario)


def test_every_replica_given_the_same_tokens_derives_the_same_console_key_and_no_other_does() -> None:
    from saga.service.settings import TokenBook

    def key(operators: dict[str, str]) -> bytes:
        settings = TransfersSettings(directory=ServiceDirectory({}), operator_tokens=operators)
        return TokenBook(settings).derived_key(b"purpose")

    assert key({"olga": "s1"}) == key({"olga": "s1"})
    assert key({"olga": "s1"}) != key({"olga": "s2"})
    assert key({"olga": "s1"}) != key({"oleg": "s1"})
