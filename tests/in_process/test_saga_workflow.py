"""The saga's decisions, step by step, against in-process services with scripted faults."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from saga import (
    AccountRef,
    InvalidTransfer,
    MemorySagaLog,
    Orchestrator,
    RetryPolicies,
    RetryPolicy,
    SagaRecord,
    SagaState,
)
from saga.run import TransferResult
from server import Settings, create_app
from server.ledger import Ledger

FAST = RetryPolicy(maximum_attempts=3, initial_interval=0.0, maximum_interval=0.0, jitter=0.0, request_timeout=1.0)
POLICIES = RetryPolicies(
    debit=FAST,
    credit=FAST,
    compensation=RetryPolicy(maximum_attempts=None, initial_interval=0.0, maximum_interval=0.0, jitter=0.0),
)
URL = "http://bank.test"


class ScriptedTransport(httpx.AsyncBaseTransport):
    """Forwards to an in-process app, except where a script says to fail a request.

    ``script`` maps a path to the faults of its successive requests:
    ``"drop"`` loses the request, ``"lose"`` applies it and loses the answer,
    ``"hang"`` never answers, ``None`` delivers normally.
    """

    def __init__(self, app: Any, script: dict[str, list[str | None]] | None = None) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.script = {path: list(faults) for path, faults in (script or {}).items()}
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.paths.append(path)
        faults = self.script.get(path)
        fault = faults.pop(0) if faults else None
        if fault == "drop":
            raise httpx.ConnectError("request lost", request=request)
        if fault == "hang":
            await asyncio.Event().wait()
        response = await self.inner.handle_async_request(request)
        if fault == "lose":
            await response.aread()
            raise httpx.ReadTimeout("response lost", request=request)
        return response


def bank(**settings: Any) -> Any:
    values: dict[str, Any] = {
        "accounts": {"alice": 1_000, "bob": 1_000},
        "credit_fault_rate": 0.0,
        "log_requests": False,
    }
    return create_app(Settings(**{**values, **settings}))


def transfer(
    app: Any, transport: httpx.AsyncBaseTransport, amount: int = 100, **kwargs: Any
) -> tuple[TransferResult, MemorySagaLog]:
    log = MemorySagaLog()

    async def run() -> TransferResult:
        orchestrator = Orchestrator(
            log, policies=kwargs.get("policies", POLICIES), transport=transport, rng=random.Random(1)
        )
        return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), amount)

    return asyncio.run(run()), log


def ledger(app: Any) -> Ledger:
    result = app.state.ledger
    assert isinstance(result, Ledger)
    return result


def steps(result: TransferResult) -> list[tuple[str, int | None]]:
    return [(attempt.step, attempt.status) for attempt in result.attempts]


def test_happy_path_is_debit_then_credit() -> None:
    app = bank()
    result, log = transfer(app, ScriptedTransport(app))
    assert result.state is SagaState.COMPLETED
    assert steps(result) == [("debit", 200), ("credit", 200)]
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)
    states = [event.state for event in asyncio.run(log.history(result.transaction_id)) if event.kind == "state"]
    assert states == [SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING, SagaState.COMPLETED]


def test_a_500_on_credit_is_caught_and_retried_under_the_same_id() -> None:
    app = bank()
    transport = ScriptedTransport(app, {"/credit": ["drop", "drop"]})
    result, _ = transfer(app, transport)
    assert result.state is SagaState.COMPLETED
    assert steps(result) == [("debit", 200), ("credit", None), ("credit", None), ("credit", 200)]
    assert result.retries == 2


def test_injected_500s_exhaust_the_credit_then_fence_and_compensate() -> None:
    app = bank(credit_fault_rate=1.0)
    result, _ = transfer(app, ScriptedTransport(app))
    assert result.state is SagaState.COMPENSATED
    assert steps(result) == [
        ("debit", 200),
        ("credit", 500),
        ("credit", 500),
        ("credit", 500),
        ("compensate_credit", 200),
        ("compensate_debit", 200),
    ]
    assert [attempt.code for attempt in result.attempts if attempt.step == "credit"] == ["injected_fault"] * 3
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (1_000, 1_000)
    trail = ledger(app).trail(result.transaction_id)
    assert [(entry.operation, entry.outcome) for entry in trail] == [
        ("debit", "applied"),
        ("compensate_credit", "voided"),
        ("compensate_debit", "reversed"),
    ]


def test_a_credit_that_landed_unseen_is_reversed_before_the_debit_is_given_back() -> None:
    app = bank()
    transport = ScriptedTransport(app, {"/credit": ["lose", "drop", "drop"]})
    result, _ = transfer(app, transport)
    assert result.state is SagaState.COMPENSATED
    outcomes = {entry.operation: entry.outcome for entry in ledger(app).trail(result.transaction_id)}
    assert outcomes == {
        "debit": "applied",
        "credit": "applied",
        "compensate_credit": "reversed",
        "compensate_debit": "reversed",
    }
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (1_000, 1_000)
    ledger(app).check_invariants()


def test_a_landed_credit_whose_money_was_spent_completes_the_transfer() -> None:
    app = bank()

    class SpendingTransport(ScriptedTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_credit":
                # bob spends the credited money before the saga can reverse it
                ledger(app).execute("debit", "bob-spends", "bob", 1_100)
            return await super().handle_async_request(request)

    result, _ = transfer(app, SpendingTransport(app, {"/credit": ["lose", "drop", "drop"]}))
    assert result.state is SagaState.COMPLETED
    assert steps(result)[-1] == ("compensate_credit", 409)
    assert ledger(app).balance("alice") == 900


def test_a_refused_credit_needs_no_fence() -> None:
    app = bank(accounts={"alice": 1_000, "bob": 2**53 - 50})
    result, _ = transfer(app, ScriptedTransport(app))
    assert result.state is SagaState.COMPENSATED
    assert steps(result) == [("debit", 200), ("credit", 409), ("compensate_debit", 200)]


def test_a_refused_debit_fails_with_nothing_moved() -> None:
    app = bank()
    result, _ = transfer(app, ScriptedTransport(app), amount=5_000)
    assert result.state is SagaState.FAILED
    assert steps(result) == [("debit", 409)]
    assert result.error == "debit refused: insufficient_funds"


def test_a_debit_whose_outcome_stays_unknown_is_compensated() -> None:
    app = bank()
    transport = ScriptedTransport(app, {"/debit": ["lose", "drop", "drop"]})
    result, _ = transfer(app, transport)
    assert result.state is SagaState.COMPENSATED
    assert steps(result)[-1] == ("compensate_debit", 200)
    assert "/credit" not in transport.paths
    assert "/compensate_credit" not in transport.paths
    assert ledger(app).balance("alice") == 1_000


def test_a_recovered_debit_whose_outcome_stays_unknown_fences_the_credit_the_lost_run_may_have_sent() -> None:
    app = bank()
    # The lost run debited and credited, but its log (exclusive: forward states
    # ride with later commits) still says DEBITING.
    record = SagaRecord("t-lost", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    record.owner, record.epoch = "the-lost-run", 1
    log = MemorySagaLog(exclusive=True)
    asyncio.run(log.create(record, SagaState.DEBITING))
    ledger(app).execute("debit", "t-lost", "alice", 100)
    ledger(app).execute("credit", "t-lost", "bob", 100)
    transport = ScriptedTransport(app, {"/debit": ["drop"] * 3})

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=transport).recover()

    (result,) = asyncio.run(recover())
    # The trail first: it shows no compensation, so the forward path resumes.
    assert transport.paths == ["/transactions/t-lost"] + ["/debit"] * 3 + ["/compensate_credit", "/compensate_debit"]
    assert result.state is SagaState.COMPENSATED
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (1_000, 1_000)


def test_compensation_retries_until_the_service_answers() -> None:
    app = bank(credit_fault_rate=1.0)
    transport = ScriptedTransport(app, {"/compensate_debit": ["drop"] * 7})
    result, _ = transfer(app, transport)
    assert result.state is SagaState.COMPENSATED
    assert [attempt.number for attempt in result.attempts if attempt.step == "compensate_debit"] == list(range(1, 9))


def test_a_compensation_that_cannot_finish_stays_in_the_log_and_recovery_finishes_it() -> None:
    app = bank(credit_fault_rate=1.0)
    limited = RetryPolicies(debit=FAST, credit=FAST, compensation=FAST)
    transport = ScriptedTransport(app, {"/compensate_debit": ["drop"] * 3})
    result, log = transfer(app, transport, policies=limited)
    assert result.state is SagaState.COMPENSATING
    assert result.error is not None
    assert ledger(app).balance("alice") == 900

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=transport).recover()

    (recovered,) = asyncio.run(recover())
    assert recovered.transaction_id == result.transaction_id
    assert recovered.state is SagaState.COMPENSATED
    assert ledger(app).balance("alice") == 1_000


def test_a_rejection_the_service_did_not_record_after_a_lost_attempt_is_not_trusted() -> None:
    app = bank(token="s3cret")

    class TokenTransport(ScriptedTransport):
        """Authorised for the first debit only, as if the token were rotated meanwhile."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/debit" and self.paths.count("/debit") == 0:
                request.headers["authorization"] = "Bearer s3cret"
            return await super().handle_async_request(request)

    result, _ = transfer(app, TokenTransport(app, {"/debit": ["lose"]}))
    assert steps(result)[:2] == [("debit", None), ("debit", 401)]
    assert result.state is not SagaState.FAILED, "the lost first debit may have applied"


@pytest.mark.parametrize(
    ("source", "target", "amount", "message"),
    [
        (AccountRef(URL, "alice"), AccountRef(URL, "alice"), 1, "same account"),
        (AccountRef(URL, "alice"), AccountRef(URL, "bob"), 0, "between 1 and"),
        (AccountRef(URL, "alice"), AccountRef(URL, "bob"), -5, "between 1 and"),
        (AccountRef(URL, "alice"), AccountRef(URL, "bob"), 1.5, "integer"),
        (AccountRef(URL, "alice"), AccountRef(URL, "bob"), True, "integer"),
        (AccountRef(URL, "al ice"), AccountRef(URL, "bob"), 1, "user_id"),
        (AccountRef("bank.test", "alice"), AccountRef(URL, "bob"), 1, "http://"),
    ],
)
def test_invalid_transfers_are_refused_before_anything_is_logged(
    source: AccountRef, target: AccountRef, amount: Any, message: str
) -> None:
    app = bank()
    log = MemorySagaLog()

    async def run() -> None:
        await Orchestrator(log, transport=ScriptedTransport(app)).transfer(source, target, amount)

    with pytest.raises(InvalidTransfer, match=message):
        asyncio.run(run())
    assert asyncio.run(log.sagas()) == []
    assert len(ledger(app)) == 0


def test_concurrent_recoveries_never_drive_one_saga_twice() -> None:
    app = bank(credit_fault_rate=1.0)
    limited = RetryPolicies(debit=FAST, credit=FAST, compensation=FAST)
    transport = ScriptedTransport(app, {"/compensate_debit": ["drop"] * 3})
    stuck, log = transfer(app, transport, policies=limited)
    assert stuck.state is SagaState.COMPENSATING

    async def recover_twice() -> tuple[list[TransferResult], list[TransferResult]]:
        orchestrator = Orchestrator(log, policies=POLICIES, transport=transport)
        first, second = await asyncio.gather(orchestrator.recover(), orchestrator.recover())
        return first, second

    first, second = asyncio.run(recover_twice())
    assert [result.transaction_id for result in first + second] == [stuck.transaction_id]
    assert ledger(app).trail(stuck.transaction_id)[-1].outcome == "reversed"
    assert ledger(app).balance("alice") == 1_000


def test_a_saga_being_recovered_is_not_resumed_again() -> None:
    app = bank(credit_fault_rate=1.0)
    limited = RetryPolicies(debit=FAST, credit=FAST, compensation=FAST)
    stuck, log = transfer(app, ScriptedTransport(app, {"/compensate_debit": ["drop"] * 3}), policies=limited)
    record = asyncio.run(log.get(stuck.transaction_id))
    assert record is not None

    class GatedTransport(ScriptedTransport):
        """Holds every request until the test opens the gate."""

        def __init__(self, app: Any) -> None:
            super().__init__(app)
            self.gate = asyncio.Event()
            self.waiting = asyncio.Event()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.waiting.set()
            await self.gate.wait()
            return await super().handle_async_request(request)

    async def resume_while_running() -> None:
        gated = GatedTransport(app)
        orchestrator = Orchestrator(log, policies=POLICIES, transport=gated)
        running = asyncio.create_task(orchestrator.resume(record))
        await gated.waiting.wait()
        with pytest.raises(ValueError, match="already running"):
            await orchestrator.resume(record)
        assert await orchestrator.recover() == []
        gated.gate.set()
        assert (await running).state is SagaState.COMPENSATED

    asyncio.run(resume_while_running())


class CodeWatching(ScriptedTransport):
    """Notes the saga's code in the log as each request goes out."""

    def __init__(self, app: Any, log: MemorySagaLog) -> None:
        super().__init__(app)
        self.log = log
        self.codes: dict[str, str | None] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        record = await self.log.get("t-restored")
        self.codes[request.url.path] = None if record is None else record.code
        return await super().handle_async_request(request)


def a_log_restored_from_before(state: SagaState) -> MemorySagaLog:
    """A log restored from a backup taken while the saga was in ``state``, by a run that went on and compensated."""
    record = SagaRecord("t-restored", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    record.owner, record.epoch = "the-run-before-the-restore", 1
    log = MemorySagaLog(exclusive=True)
    asyncio.run(log.create(record, state))
    return log


@pytest.mark.parametrize("state", [SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING])
def test_a_saga_whose_compensation_the_restored_log_forgot_is_compensated_again_never_completed(
    state: SagaState,
) -> None:
    app = bank()
    # After the backup, the lost run's debit stayed unknown to it, so it gave the debit back without fencing the credit.
    ledger(app).execute("debit", "t-restored", "alice", 100)
    ledger(app).execute("compensate_debit", "t-restored", "alice", 100)
    log = a_log_restored_from_before(state)
    transport = CodeWatching(app, log)
    (result,) = asyncio.run(recover_with(log, transport))
    assert result.state is SagaState.COMPENSATED
    assert transport.codes["/compensate_credit"] == "outcome_unknown", "logged with COMPENSATING, for a recovery"
    assert "/credit" not in transport.paths, "a reversed debit never leads to a credit"
    assert "/debit" not in transport.paths
    assert steps(result) == [("compensate_credit", 200), ("compensate_debit", 200)]
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (1_000, 1_000)
    assert compensating_because(log) == "a service recorded a compensation the log lacks"


def recover_with(log: MemorySagaLog, transport: httpx.AsyncBaseTransport, **options: Any) -> Any:
    return Orchestrator(log, policies=options.get("policies", POLICIES), transport=transport).recover()


def compensating_because(log: MemorySagaLog) -> str | None:
    (entered,) = [e for e in asyncio.run(log.history("t-restored")) if e.state is SagaState.COMPENSATING]
    return entered.detail


def test_a_resumed_saga_whose_trail_cannot_be_read_sends_nothing_forward() -> None:
    app = bank()
    ledger(app).execute("debit", "t-restored", "alice", 100)
    log = a_log_restored_from_before(SagaState.DEBITING)
    transport = ScriptedTransport(app, {"/transactions/t-restored": ["drop"] * 3})
    (result,) = asyncio.run(recover_with(log, transport))
    assert transport.paths == ["/transactions/t-restored"] * 3 + ["/compensate_credit", "/compensate_debit"]
    assert result.state is SagaState.COMPENSATED
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (1_000, 1_000)
    assert compensating_because(log) == "cannot read the trails"


def test_a_resumed_saga_with_no_compensation_on_record_carries_on_forward() -> None:
    app = bank()
    ledger(app).execute("debit", "t-restored", "alice", 100)
    log = a_log_restored_from_before(SagaState.CREDITING)
    transport = ScriptedTransport(app)
    (result,) = asyncio.run(recover_with(log, transport))
    assert transport.paths == ["/transactions/t-restored", "/credit"]
    assert result.state is SagaState.COMPLETED
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)


def test_a_trail_read_that_hangs_is_given_up_at_the_request_timeout_and_read_again() -> None:
    app = bank()
    ledger(app).execute("debit", "t-restored", "alice", 100)
    log = a_log_restored_from_before(SagaState.CREDITING)
    transport = ScriptedTransport(app, {"/transactions/t-restored": ["hang"]})
    quick = RetryPolicy(maximum_attempts=2, initial_interval=0.0, jitter=0.0, request_timeout=0.05)
    policies = RetryPolicies(debit=quick, credit=quick, compensation=quick)
    (result,) = asyncio.run(recover_with(log, transport, policies=policies))
    assert transport.paths == ["/transactions/t-restored"] * 2 + ["/credit"]
    assert result.state is SagaState.COMPLETED
