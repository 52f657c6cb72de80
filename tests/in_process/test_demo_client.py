"""The demo as a caller of the transfers API: its POSTs sent again under the same key, and its checks of the answers."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from generated_client.transfers.models import Transfer
from saga.drive.batch import PlannedTransfer
from saga.records import AccountRef
from saga.service.demo_client import ApiFailure, Submission, TransfersApi, answer_violations, submissions
from tests.support.aio import run

T = TypeVar("T")

A, B = "http://bank-a.test", "http://bank-b.test"
NAMES = {A: "bank-a", B: "bank-b"}
PLANNED = [PlannedTransfer(AccountRef(A, "alice"), AccountRef(B, "dave"), 250)]


def transfer_json(submission: Submission, transaction_id: str, state: str = "PENDING") -> dict[str, Any]:
    body = submission.body.to_dict()
    return {
        "transaction_id": transaction_id,
        "idempotency_key": submission.key,
        "state": state,
        "source": body["source"],
        "target": body["target"],
        "amount": body["amount"],
        "created_at": "2026-12-03T08:15:30.125Z",
        "updated_at": "2026-12-03T08:15:30.125Z",
        "attempts": 0,
        "last_error": None,
        "submitted_by": None,
        "deadline": None,
        "code": None,
    }


def transfer(submission: Submission, transaction_id: str, state: str = "COMPLETED") -> Transfer:
    return Transfer.from_dict(transfer_json(submission, transaction_id, state))


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"/problems/{code}", "title": code, "status": status, "detail": "no", "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


def api(handler: Callable[[httpx.Request], httpx.Response], *, patience: float = 5.0) -> TransfersApi:
    return TransfersApi(
        "http://transfers.test", transport=httpx.MockTransport(handler), patience=patience, rng=random.Random(1)
    )


def test_a_post_without_an_answer_is_sent_again_with_the_same_key_and_body_until_it_is_answered() -> None:
    (sent,) = submissions("run1", PLANNED, NAMES)
    seen: list[tuple[str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("Idempotency-Key"), request.content))
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(seen) == 2:
            return problem(503, "log_unavailable")
        if len(seen) == 3:
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=transfer_json(sent, "t-1"), headers={"Idempotent-Replayed": "true"})

    run(api(handler).submit(sent))

    assert [key for key, _ in seen] == ["demo-run1-1"] * 4
    assert len({content for _, content in seen}) == 1
    assert json.loads(seen[0][1]) == {
        "source": {"service": "bank-a", "user_id": "alice"},
        "target": {"service": "bank-b", "user_id": "dave"},
        "amount": 250,
    }
    assert sent.transaction_id == "t-1"
    assert sent.replayed
    assert sent.posts == 4
    assert sent.failures[0].startswith("ConnectError")
    assert sent.failures[1].startswith("503 log_unavailable")


def test_a_refused_post_is_not_sent_again() -> None:
    (sent,) = submissions("run1", PLANNED, NAMES)
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        return problem(422, "idempotency_key_reused")

    with pytest.raises(ApiFailure, match="422 idempotency_key_reused"):
        run(api(handler).submit(sent))
    assert posts == 1
    assert sent.transaction_id is None


def test_a_service_that_never_answers_fails_the_demo_loudly_after_its_patience() -> None:
    (sent,) = submissions("run1", PLANNED, NAMES)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiFailure, match=r"no answer in 0.3 s over \d+ tries; the last: ConnectError"):
        run(api(handler, patience=0.3).submit(sent))
    assert sent.transaction_id is None
    assert len(sent.failures) > 1


def test_answers_that_agree_break_nothing() -> None:
    sent = submissions("run1", PLANNED * 2, NAMES)
    for number, submission in enumerate(sent):
        submission.transaction_id = f"t-{number}"
    finals = [transfer(submission, f"t-{number}") for number, submission in enumerate(sent)]
    assert answer_violations(sent, finals, finals) == []


def test_two_keys_answered_with_one_transaction_id_are_caught() -> None:
    first, second = submissions("run1", PLANNED * 2, NAMES)
    first.transaction_id = second.transaction_id = "t-0"
    finals = [transfer(first, "t-0"), transfer(second, "t-0")]
    broken = answer_violations([first, second], finals, finals[:1])
    assert [(v.invariant, v.transaction_ids) for v in broken] == [
        ("one transaction id per key", ("t-0",)),
        ("one transaction id per key", ("demo-run1-2",)),
    ]


def test_a_key_listed_twice_a_state_listed_otherwise_and_a_changed_body_are_caught() -> None:
    first, second, third = submissions("run1", PLANNED * 3, NAMES)
    for number, submission in enumerate((first, second, third)):
        submission.transaction_id = f"t-{number}"
    finals = [transfer(first, "t-0"), transfer(second, "t-1"), transfer(third, "t-2")]
    finals[2].amount = 999
    listed = [finals[0], transfer(first, "t-9"), transfer(second, "t-1", "COMPENSATED"), finals[2]]
    violations = answer_violations([first, second, third], finals, listed)
    broken = {violation.invariant: violation.transaction_ids for violation in violations}
    assert broken == {
        "one transaction id per key": ("demo-run1-1",),
        "the listing agrees with each transfer": ("demo-run1-2",),
        "the service recorded what was sent": ("demo-run1-3",),
    }
