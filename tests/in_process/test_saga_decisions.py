"""The saga's decisions where the workflow tests left them open: what ends FAILED, COMPENSATED or
COMPLETED, what a compensation may accept, what recovery resumes from, what the log holds, and how
far apart retries go, on a virtual clock (saga/simulation/clock.py) rather than with real sleeps.

Each test drives in-process accounts services through the real orchestrator and judges it by what
an operator sees: the saga's end state, its log, and the money on each service.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from saga import AccountRef, MemorySagaLog, Orchestrator, RetryPolicies, RetryPolicy, SagaRecord, SagaState
from saga.logs import SagaLogError
from saga.run import SagaRun, TransferResult
from saga.simulation.clock import run_in_virtual_time
from saga.steps import DEBIT
from server.ledger import MAX_BALANCE, Operation
from tests.in_process.test_saga_workflow import FAST, POLICIES, URL, ScriptedTransport, bank, ledger, steps
from tests.support.failing_logs import FailingCommitOnce

SOURCE_URL = "http://source.test"
TARGET_URL = "http://target.test"
LIMITED = RetryPolicies(debit=FAST, credit=FAST, compensation=FAST)


class Banks(httpx.AsyncBaseTransport):
    """Two accounts services, each behind its own scripted transport, told apart by host."""

    def __init__(self, source: ScriptedTransport, target: ScriptedTransport) -> None:
        self.by_host = {httpx.URL(SOURCE_URL).host: source, httpx.URL(TARGET_URL).host: target}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.by_host[request.url.host].handle_async_request(request)


class Rewriting(ScriptedTransport):
    """Passes each request through ``rewrite`` (by path) before the app sees it."""

    def __init__(self, app: Any, rewrite: dict[str, Callable[[httpx.Request], httpx.Request]], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.rewrite = rewrite

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        change = self.rewrite.get(request.url.path)
        return await super().handle_async_request(change(request) if change else request)


def authorised(request: httpx.Request) -> httpx.Request:
    request.headers["authorization"] = "Bearer s3cret"
    return request


#: The audit trail of the saga these tests recover, read with the token the ledger operations lack.
TRAIL_AUTHORISED: dict[str, Callable[[httpx.Request], httpx.Request]] = {"/transactions/t-lost": authorised}


def with_an_unknown_key(request: httpx.Request) -> httpx.Request:
    body = {**json.loads(request.content), "note": "an unknown key"}
    return httpx.Request(request.method, request.url, headers=request.headers, json=body)


def run_transfer(
    transport: httpx.AsyncBaseTransport,
    *,
    amount: int = 100,
    policies: RetryPolicies = POLICIES,
    log: MemorySagaLog | None = None,
    source: AccountRef | None = None,
    target: AccountRef | None = None,
) -> tuple[TransferResult, MemorySagaLog]:
    saga_log = log or MemorySagaLog()

    async def run() -> TransferResult:
        orchestrator = Orchestrator(saga_log, policies=policies, transport=transport, rng=random.Random(1))
        return await orchestrator.transfer(source or AccountRef(URL, "alice"), target or AccountRef(URL, "bob"), amount)

    return asyncio.run(run()), saga_log


def logged_states(log: MemorySagaLog, transaction_id: str) -> list[SagaState | None]:
    return [event.state for event in asyncio.run(log.history(transaction_id)) if event.kind == "state"]


# -- what ends FAILED -----------------------------------------------------------


def test_a_debit_refused_401_on_its_first_attempt_fails_and_sends_nothing_else() -> None:
    app = bank(token="s3cret")
    transport = ScriptedTransport(app)
    result, log = run_transfer(transport)
    assert steps(result) == [("debit", 401)]
    assert result.state is SagaState.FAILED
    assert result.error == "debit refused: unauthorized"
    assert transport.paths == ["/debit"]
    assert logged_states(log, result.transaction_id)[-1] is SagaState.FAILED


def test_a_recorded_refusal_after_a_request_that_never_arrived_fails_the_saga() -> None:
    app = bank()
    transport = ScriptedTransport(app, {"/debit": ["drop"]})
    result, _ = run_transfer(transport, amount=5_000)
    assert steps(result) == [("debit", None), ("debit", 409)]
    assert result.state is SagaState.FAILED
    assert result.error == "debit refused: insufficient_funds"
    assert transport.paths == ["/debit", "/debit"]
    assert ledger(app).balance("alice") == 1_000


def test_an_unrecorded_refusal_after_a_lost_debit_is_compensated_not_failed() -> None:
    app = bank(token="s3cret")
    first_only = Rewriting(app, {}, script={"/debit": ["lose"]})
    first_only.rewrite["/debit"] = lambda request: authorised(request) if first_only.paths == [] else request
    first_only.rewrite["/compensate_debit"] = authorised
    result, _ = run_transfer(first_only)
    assert steps(result) == [("debit", None), ("debit", 401), ("compensate_debit", 200)]
    assert result.state is SagaState.COMPENSATED
    assert ledger(app).balance("alice") == 1_000


# -- what a compensation may accept ------------------------------------------------


@pytest.mark.parametrize(
    ("rewrite", "status"),
    [(lambda request: request, 401), (lambda request: with_an_unknown_key(authorised(request)), 422)],
    ids=["unauthorized", "invalid_request"],
)
def test_a_compensation_answered_with_an_unrecorded_refusal_is_not_done(
    rewrite: Callable[[httpx.Request], httpx.Request], status: int
) -> None:
    app = bank(token="s3cret", credit_fault_rate=1.0)
    rewrites = {"/debit": authorised, "/credit": authorised, "/compensate_credit": authorised}
    transport = Rewriting(app, {**rewrites, "/compensate_debit": rewrite})
    result, log = run_transfer(transport)
    assert steps(result)[-1] == ("compensate_debit", status)
    assert result.state is SagaState.COMPENSATING, "the debited money has not been given back"
    assert result.error == f"compensate_debit of {result.transaction_id}: {status} {steps_code(result)}"
    assert ledger(app).balance("alice") == 900
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert (record.state, record.last_error) == (
        SagaState.COMPENSATING,
        f"compensate_debit blocked: {status} {steps_code(result)}",
    )


def steps_code(result: TransferResult) -> str | None:
    return result.attempts[-1].code


def test_a_compensation_answered_with_a_recorded_refusal_is_done() -> None:
    # The credit never landed and the debit was never applied: compensate_debit
    # voids the id, and unknown_user is a final, recorded answer for a source
    # account that does not exist.
    app = bank()
    transport = ScriptedTransport(app, {"/debit": ["drop", "drop", "drop"]})
    result, _ = run_transfer(transport, source=AccountRef(URL, "nobody"))
    assert steps(result)[-1] == ("compensate_debit", 404)
    assert result.state is SagaState.COMPENSATED


def test_a_debit_that_cannot_be_given_back_for_want_of_room_waits_in_compensating_until_there_is_room() -> None:
    limit = MAX_BALANCE
    source_app = bank(accounts={"alice": limit - 50})
    target_app = bank(credit_fault_rate=1.0)

    class FilledMeanwhile(ScriptedTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_debit" and ledger(source_app).balance("alice") == limit - 150:
                # Another transfer credits alice the room her debit left.
                ledger(source_app).execute("credit", "another-transfer", "alice", 100)
            return await super().handle_async_request(request)

    banks = Banks(FilledMeanwhile(source_app), ScriptedTransport(target_app))
    result, log = run_transfer(
        banks, policies=LIMITED, source=AccountRef(SOURCE_URL, "alice"), target=AccountRef(TARGET_URL, "bob")
    )
    assert steps(result)[-2:] == [("compensate_credit", 200), ("compensate_debit", 409)]
    assert result.state is SagaState.COMPENSATING, "the debited money has not been given back"
    assert result.error == f"compensate_debit of {result.transaction_id}: 409 reversal_exceeds_balance_limit"
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert (record.state, record.last_error) == (
        SagaState.COMPENSATING,
        "compensate_debit blocked: 409 reversal_exceeds_balance_limit",
    )
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (limit - 50, 1_000)

    # Still no room: recovery leaves it where it was.
    assert recover_through(log, banks).state is SagaState.COMPENSATING

    ledger(source_app).execute("debit", "alice-spends", "alice", 10_000)
    recovered = recover_through(log, banks)
    assert steps(recovered) == [("compensate_credit", 200), ("compensate_debit", 200)]
    assert recovered.state is SagaState.COMPENSATED
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (
        limit - 50 - 10_000 + 100,
        1_000,
    )
    assert [(entry.operation, entry.outcome) for entry in ledger(source_app).trail(result.transaction_id)] == [
        ("debit", "applied"),
        ("compensate_debit", "reversed"),
    ]
    ledger(source_app).check_invariants()


#: A request the service refuses with each code, made on a ledger beforehand: (operation, user, amount).
REFUSED_WITH: dict[str, tuple[Operation, str, int]] = {
    "insufficient_funds": ("debit", "alice", 10**9),
    "balance_limit_exceeded": ("credit", "full", 1),
    "transaction_compensated": ("debit", "alice", 1),
}


@pytest.mark.parametrize(
    ("step", "code"),
    [
        ("compensate_debit", "insufficient_funds"),
        ("compensate_debit", "balance_limit_exceeded"),
        ("compensate_debit", "transaction_compensated"),
        ("compensate_credit", "balance_limit_exceeded"),
        ("compensate_credit", "transaction_compensated"),
    ],
)
def test_a_compensation_answered_with_a_recorded_refusal_that_does_not_end_it_is_not_done(step: str, code: str) -> None:
    # A misbehaving service (here, a proxy that sends the compensation on as
    # another request) answers the compensation with a final code the
    # contract never gives it: what became of the money is unknown.
    app = bank(accounts={"alice": 1_000, "bob": 1_000, "full": MAX_BALANCE}, credit_fault_rate=1.0)
    operation, user_id, amount = REFUSED_WITH[code]
    if code == "transaction_compensated":
        ledger(app).execute("compensate_debit", "refused", user_id, amount)
    assert ledger(app).execute(operation, "refused", user_id, amount)[0].rejection == code

    def misdirect(request: httpx.Request) -> httpx.Request:
        return httpx.Request(
            "POST",
            request.url.copy_with(path=f"/{operation}"),
            headers={**request.headers, "transaction_id": "refused"},
            json={"user_id": user_id, "amount": amount},
        )

    transport = Rewriting(app, {f"/{step}": misdirect})
    result, log = run_transfer(transport, policies=LIMITED)
    assert steps(result)[-1] == (step, 409)
    assert result.state is SagaState.COMPENSATING
    assert result.error == f"{step} of {result.transaction_id}: 409 {code}"
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert record.last_error == f"{step} blocked: 409 {code}"
    assert ledger(app).balance("alice") == 900, "the debited money has not been given back"
    if step == "compensate_credit":
        assert "/compensate_debit" not in transport.paths, "the debit is not given back before the credit is fenced"


# -- what ends COMPLETED ------------------------------------------------------------


def test_a_compensate_debit_answered_transfer_completed_completes_the_saga() -> None:
    # A saga resumed in COMPENSATING without a fence (as logged by a run that
    # had not learned of its credit) whose credit did land on the same service.
    app = bank()
    log = MemorySagaLog()
    record = SagaRecord("t-landed", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    ledger(app).execute("debit", "t-landed", "alice", 100)
    ledger(app).execute("credit", "t-landed", "bob", 100)
    asyncio.run(log.create(record, SagaState.COMPENSATING))
    record.state = SagaState.COMPENSATING

    async def resume() -> TransferResult:
        return await Orchestrator(log, policies=POLICIES, transport=ScriptedTransport(app)).resume(record)

    result = asyncio.run(resume())
    assert steps(result) == [("compensate_debit", 409)]
    assert result.state is SagaState.COMPLETED
    assert result.error == "the credit landed and stands"
    assert logged_states(log, "t-landed")[-1] is SagaState.COMPLETED
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)


# -- recovery ---------------------------------------------------------------------


def test_a_credit_found_spent_when_fenced_completes_the_saga_and_says_why() -> None:
    app = bank()

    class Spending(ScriptedTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_credit":
                ledger(app).execute("debit", "bob-spends", "bob", 1_100)
            return await super().handle_async_request(request)

    result, log = run_transfer(Spending(app, {"/credit": ["lose", "drop", "drop"]}))
    assert steps(result)[-1] == ("compensate_credit", 409)
    assert (result.state, result.error) == (SagaState.COMPLETED, "the credit landed and stands")
    history = asyncio.run(log.history(result.transaction_id))
    assert [(event.state, event.detail) for event in history if event.kind == "state"][-2:] == [
        (SagaState.COMPENSATING, "credit outcome unknown"),
        (SagaState.COMPLETED, "the credit landed and stands"),
    ]


def test_a_debit_whose_outcome_stays_unknown_is_logged_with_why() -> None:
    app = bank()
    result, log = run_transfer(ScriptedTransport(app, {"/debit": ["drop", "drop", "drop"]}))
    assert result.state is SagaState.COMPENSATED
    history = asyncio.run(log.history(result.transaction_id))
    assert [(event.state, event.detail) for event in history if event.kind == "state"][-2:] == [
        (SagaState.COMPENSATING, "debit outcome unknown"),
        (SagaState.COMPENSATED, None),
    ]
    assert result.error == "debit outcome unknown"


@pytest.mark.parametrize(
    ("script", "described"),
    [
        ({"/compensate_debit": ["drop"] * 3}, "unreachable: ConnectError: request lost"),
        ({"/compensate_debit": ["lose"] * 3}, "ReadTimeout"),
    ],
)
def test_a_blocked_compensation_says_what_its_last_attempt_got(
    script: dict[str, list[str | None]], described: str
) -> None:
    app = bank(credit_fault_rate=1.0)
    result, log = run_transfer(ScriptedTransport(app, script), policies=LIMITED)
    assert result.state is SagaState.COMPENSATING
    assert result.error == f"compensate_debit of {result.transaction_id}: {described}"
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert record.last_error == f"compensate_debit blocked: {described}"


def test_a_blocked_compensation_answered_with_a_bare_status_says_the_status() -> None:
    app = bank(credit_fault_rate=1.0)

    class Teapot(ScriptedTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_debit":
                self.paths.append(request.url.path)
                return httpx.Response(418, text="short and stout")
            return await super().handle_async_request(request)

    result, _ = run_transfer(Teapot(app))
    assert steps(result)[-1] == ("compensate_debit", 418)
    assert result.error == f"compensate_debit of {result.transaction_id}: 418"


def test_each_retry_is_logged_with_the_step_the_id_what_came_back_and_the_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = bank(credit_fault_rate=1.0)
    with caplog.at_level("INFO", logger="saga"):
        result, _ = run_transfer(ScriptedTransport(app, {"/debit": ["drop"]}))
    tid = result.transaction_id
    retries = [record.getMessage() for record in caplog.records if "retrying" in record.getMessage()]
    assert retries == [
        f"debit {tid}: unreachable: ConnectError: request lost on attempt 1, retrying",
        f"credit {tid}: 500 injected_fault on attempt 1, retrying",
        f"credit {tid}: 500 injected_fault on attempt 2, retrying",
    ]


def test_a_saga_logged_in_pending_is_recovered_from_its_first_step() -> None:
    app = bank()
    log = MemorySagaLog()
    record = SagaRecord("t-pending", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    asyncio.run(log.create(record, SagaState.PENDING))

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=ScriptedTransport(app)).recover()

    (result,) = asyncio.run(recover())
    assert result.state is SagaState.COMPLETED
    assert steps(result) == [("debit", 200), ("credit", 200)]
    assert logged_states(log, "t-pending") == [
        SagaState.PENDING,
        SagaState.PENDING,
        SagaState.DEBITING,
        SagaState.CREDITING,
        SagaState.COMPLETED,
    ]
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)


def test_a_saga_blocked_while_fencing_its_credit_fences_it_first_when_recovered() -> None:
    source_app, target_app = bank(), bank()
    target = ScriptedTransport(
        target_app, {"/credit": ["lose", "drop", "drop"], "/compensate_credit": ["drop", "drop", "drop"]}
    )
    banks = Banks(ScriptedTransport(source_app), target)
    result, log = run_transfer(
        banks, policies=LIMITED, source=AccountRef(SOURCE_URL, "alice"), target=AccountRef(TARGET_URL, "bob")
    )
    assert result.state is SagaState.COMPENSATING
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert (record.state, record.fence_credit) == (SagaState.COMPENSATING, True)
    assert ledger(source_app).balance("alice") == 900
    assert ledger(target_app).balance("bob") == 1_100, "the lost credit landed"

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=banks).recover()

    (recovered,) = asyncio.run(recover())
    assert steps(recovered) == [("compensate_credit", 200), ("compensate_debit", 200)]
    assert recovered.state is SagaState.COMPENSATED
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (1_000, 1_000)


def saga_a_lost_run_left(state: SagaState, *, debited: Any, credited: Any = None) -> MemorySagaLog:
    """The log a crashed first run left: the saga in ``state``, its requests applied on the services but unlogged."""
    record = SagaRecord("t-lost", AccountRef(SOURCE_URL, "alice"), AccountRef(TARGET_URL, "bob"), 100)
    record.owner, record.epoch = "the-lost-run", 1
    log = MemorySagaLog(exclusive=True)
    asyncio.run(log.create(record, state))
    ledger(debited).execute("debit", "t-lost", "alice", 100)
    if credited is not None:
        ledger(credited).execute("credit", "t-lost", "bob", 100)
    return log


def recover_through(log: MemorySagaLog, transport: httpx.AsyncBaseTransport) -> TransferResult:
    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=LIMITED, transport=transport).recover()

    (result,) = asyncio.run(recover())
    return result


def test_a_recovered_debit_refused_401_is_given_back_not_failed_since_the_lost_run_may_have_applied_it() -> None:
    source_app, target_app = bank(token="s3cret"), bank()
    log = saga_a_lost_run_left(SagaState.DEBITING, debited=source_app)
    # Only the ledger operations are refused: the trail a resumed saga reads first is not.
    unauthorised = Banks(Rewriting(source_app, TRAIL_AUTHORISED), ScriptedTransport(target_app))
    blocked = recover_through(log, unauthorised)
    assert blocked.state is SagaState.COMPENSATING, "a 401 says nothing of the debit the lost run sent"
    assert [(step, status) for step, status in steps(blocked) if step == "debit"] == [("debit", 401)]
    assert ledger(source_app).balance("alice") == 900

    authorised_source = Rewriting(source_app, {"/compensate_debit": authorised})
    recovered = recover_through(log, Banks(authorised_source, ScriptedTransport(target_app)))
    assert recovered.state is SagaState.COMPENSATED
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (1_000, 1_000)


def test_a_recovered_credit_refused_401_is_fenced_since_the_lost_run_may_have_applied_it() -> None:
    source_app, target_app = bank(), bank(token="s3cret")
    log = saga_a_lost_run_left(SagaState.CREDITING, debited=source_app, credited=target_app)
    blocked = recover_through(log, Banks(ScriptedTransport(source_app), Rewriting(target_app, TRAIL_AUTHORISED)))
    assert steps(blocked)[:2] == [("credit", 401), ("compensate_credit", 401)]
    assert blocked.state is SagaState.COMPENSATING
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (900, 1_100), (
        "the debit must not be given back while the credit stands"
    )

    authorised_target = Rewriting(target_app, {"/compensate_credit": authorised, **TRAIL_AUTHORISED})
    recovered = recover_through(log, Banks(ScriptedTransport(source_app), authorised_target))
    assert steps(recovered) == [("compensate_credit", 200), ("compensate_debit", 200)]
    assert recovered.state is SagaState.COMPENSATED
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (1_000, 1_000)


def test_a_refused_credit_is_logged_without_a_fence() -> None:
    source_app, target_app = bank(), bank(accounts={"bob": 2**53 - 50})
    banks = Banks(ScriptedTransport(source_app), ScriptedTransport(target_app))
    result, log = run_transfer(banks, source=AccountRef(SOURCE_URL, "alice"), target=AccountRef(TARGET_URL, "bob"))
    assert steps(result) == [("debit", 200), ("credit", 409), ("compensate_debit", 200)]
    history = asyncio.run(log.history(result.transaction_id))
    compensating = [event for event in history if event.state is SagaState.COMPENSATING]
    assert [event.detail for event in compensating] == ["credit refused: balance_limit_exceeded"]
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert (record.state, record.fence_credit) == (SagaState.COMPENSATED, False)


def test_a_credit_whose_outcome_stays_unknown_is_logged_with_a_fence_and_why() -> None:
    app = bank(credit_fault_rate=1.0)
    result, log = run_transfer(ScriptedTransport(app))
    history = asyncio.run(log.history(result.transaction_id))
    compensating = [event for event in history if event.state is SagaState.COMPENSATING]
    assert [event.detail for event in compensating] == ["credit outcome unknown"]
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert record.fence_credit is True


# -- what the log holds -------------------------------------------------------------


def test_every_attempt_is_in_the_log_in_order_before_the_saga_ends() -> None:
    app = bank()
    transport = ScriptedTransport(app, {"/debit": ["drop"], "/credit": ["lose", "drop"]})
    result, log = run_transfer(transport)
    assert result.state is SagaState.COMPLETED
    history = asyncio.run(log.history(result.transaction_id))
    logged = [event.attempt for event in history if event.kind == "attempt"]
    assert logged == list(result.attempts)
    assert [(attempt.step, attempt.number, attempt.status) for attempt in result.attempts] == [
        ("debit", 1, None),
        ("debit", 2, 200),
        ("credit", 1, None),
        ("credit", 2, None),
        ("credit", 3, 200),
    ]
    assert all(attempt.url == URL for attempt in result.attempts)
    # The credit's last attempt is committed with the state it led to, not after it.
    kinds = [event.kind if event.kind == "attempt" else event.state for event in history]
    assert kinds[-2:] == ["attempt", SagaState.COMPLETED]
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert record.attempts == 5


def test_attempts_whose_commit_failed_are_committed_with_the_next_change() -> None:
    app = bank()
    log = FailingCommitOnce(fail_at=3)
    record = SagaRecord("t-disk", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    transport = ScriptedTransport(app, {"/debit": ["drop"]})

    async def scenario() -> SagaRun:
        await log.create(record, SagaState.PENDING)
        run = SagaRun(
            record,
            log,
            lambda url: Orchestrator(log, transport=transport).client_for(url),
            POLICIES,
            random.Random(1),
            lambda: 7,
        )
        await run.enter(SagaState.DEBITING)
        # Commit 3 is the one before the debit's second attempt: it carries the first attempt and fails.
        with pytest.raises(SagaLogError):
            await run.step(DEBIT)
        assert record.last_error is None
        await run.enter(SagaState.COMPENSATING, because="the log failed")
        return run

    run = asyncio.run(scenario())
    history = asyncio.run(log.history("t-disk"))
    assert [event.attempt for event in history if event.kind == "attempt"] == run.attempts
    assert [(attempt.step, attempt.status) for attempt in run.attempts] == [("debit", None)]
    logged = asyncio.run(log.get("t-disk"))
    assert logged is not None
    assert (logged.state, logged.attempts, logged.last_error) == (SagaState.COMPENSATING, 1, "the log failed")
    assert run.record.last_error == "the log failed"


def test_every_change_is_logged_at_the_orchestrators_time() -> None:
    app = bank()
    log = MemorySagaLog()
    ticks = iter(range(1_000, 1_100))

    async def run() -> TransferResult:
        orchestrator = Orchestrator(
            log, policies=POLICIES, transport=ScriptedTransport(app), now_ms=lambda: next(ticks)
        )
        return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    result = asyncio.run(run())
    history = asyncio.run(log.history(result.transaction_id))
    assert [(event.kind, event.at_ms) for event in history] == [
        ("state", 1_000),
        ("state", 1_000),
        # 1_001 went to the lease's expiry, read when the saga was created.
        # An attempt is logged at the time its request went out, before the commit that carries it.
        ("attempt", 1_002),
        ("state", 1_003),
        ("attempt", 1_004),
        ("state", 1_005),
    ]
    assert [attempt.sent_at_ms for attempt in result.attempts] == [1_002, 1_004]
    record = asyncio.run(log.get(result.transaction_id))
    assert record is not None
    assert (record.created_at_ms, record.updated_at_ms) == (1_000, 1_005)


def test_a_step_for_an_account_without_a_url_is_a_programming_error() -> None:
    log = MemorySagaLog()
    record = SagaRecord("t-nowhere", AccountRef((), "alice"), AccountRef(URL, "bob"), 100)
    run = SagaRun(record, log, lambda url: Orchestrator(log).client_for(url), POLICIES, random.Random(1), lambda: 0)
    with pytest.raises(AssertionError, match=r"^a service has at least one URL$"):
        asyncio.run(run.step(DEBIT))


# -- retry policies and timing, on a virtual clock ----------------------------------


class Timed(ScriptedTransport):
    """Notes the loop's time of each request; ``hang`` paths never answer."""

    def __init__(self, app: Any, script: dict[str, list[str | None]] | None = None, hang: str = "") -> None:
        super().__init__(app, script)
        self.times: list[tuple[str, float]] = []
        self.hang = hang

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.times.append((request.url.path, asyncio.get_running_loop().time()))
        if request.url.path == self.hang:
            await asyncio.sleep(3_600)
        return await super().handle_async_request(request)


def in_virtual_time(transport: httpx.AsyncBaseTransport, policies: RetryPolicies, rng: random.Random) -> TransferResult:
    async def run() -> TransferResult:
        orchestrator = Orchestrator(MemorySagaLog(), policies=policies, transport=transport, rng=rng)
        return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    return run_in_virtual_time(run())


def gaps(transport: Timed, path: str) -> list[float]:
    times = [at for sent, at in transport.times if sent == path]
    return [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)]


def test_debit_and_credit_retry_under_their_own_policies() -> None:
    debit = RetryPolicy(maximum_attempts=2, initial_interval=0.0, maximum_interval=0.0, jitter=0.0)
    credit = RetryPolicy(maximum_attempts=4, initial_interval=0.0, maximum_interval=0.0, jitter=0.0)
    policies = RetryPolicies(debit=debit, credit=credit, compensation=POLICIES.compensation)
    app = bank()
    transport = ScriptedTransport(app, {"/debit": ["drop"], "/credit": ["drop"] * 4})
    result, _ = run_transfer(transport, policies=policies)
    assert [attempt.number for attempt in result.attempts if attempt.step == "credit"] == [1, 2, 3, 4]
    assert result.state is SagaState.COMPENSATED

    lost = ScriptedTransport(bank(), {"/debit": ["drop"] * 2})
    result, _ = run_transfer(lost, policies=policies)
    assert [attempt.number for attempt in result.attempts if attempt.step == "debit"] == [1, 2]
    assert result.state is SagaState.COMPENSATED


def test_retries_back_off_exponentially_up_to_the_cap_without_jitter() -> None:
    credit = RetryPolicy(
        maximum_attempts=5, initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=3.0, jitter=0.0
    )
    policies = RetryPolicies(debit=FAST, credit=credit, compensation=POLICIES.compensation)
    transport = Timed(bank(), {"/credit": ["drop"] * 4})
    result = in_virtual_time(transport, policies, random.Random(1))
    assert result.state is SagaState.COMPLETED
    assert gaps(transport, "/credit") == [1.0, 2.0, 3.0, 3.0]


def test_jitter_spreads_each_delay_within_its_bounds_and_is_drawn_from_the_orchestrators_rng() -> None:
    credit = RetryPolicy(
        maximum_attempts=5, initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=8.0, jitter=0.5
    )
    policies = RetryPolicies(debit=FAST, credit=credit, compensation=POLICIES.compensation)
    transport = Timed(bank(), {"/credit": ["drop"] * 4})
    in_virtual_time(transport, policies, random.Random(7))
    drawn = random.Random(7)
    expected = [round(nominal * (1 + drawn.uniform(-0.5, 0.5)), 6) for nominal in (1.0, 2.0, 4.0, 8.0)]
    assert gaps(transport, "/credit") == expected
    assert expected != [1.0, 2.0, 4.0, 8.0]


def test_a_request_that_never_answers_is_given_up_after_its_timeout() -> None:
    debit = RetryPolicy(maximum_attempts=2, initial_interval=0.0, maximum_interval=0.0, jitter=0.0, request_timeout=2.5)
    policies = RetryPolicies(debit=debit, credit=FAST, compensation=POLICIES.compensation)
    transport = Timed(bank(), hang="/debit")
    result = in_virtual_time(transport, policies, random.Random(1))
    debits = [attempt for attempt in result.attempts if attempt.step == "debit"]
    assert [(attempt.status, attempt.error, attempt.latency_us) for attempt in debits] == [
        (None, "timeout", 2_500_000),
        (None, "timeout", 2_500_000),
    ]
    assert gaps(transport, "/debit") == [2.5]
    assert result.state is SagaState.COMPENSATED


def test_a_compensation_on_record_at_the_target_alone_turns_a_resumed_saga_back() -> None:
    source_app, target_app = bank(), bank()
    # The lost run fenced the credit, then the log went back to before it.
    log = saga_a_lost_run_left(SagaState.DEBITING, debited=source_app)
    ledger(target_app).execute("compensate_credit", "t-lost", "bob", 100)
    source, target = ScriptedTransport(source_app), ScriptedTransport(target_app)
    recovered = recover_through(log, Banks(source, target))
    assert recovered.state is SagaState.COMPENSATED
    assert "/credit" not in target.paths
    assert "/debit" not in source.paths
    assert (ledger(source_app).balance("alice"), ledger(target_app).balance("bob")) == (1_000, 1_000)
