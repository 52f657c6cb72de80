"""A saga's deadline, the stable code of every end, and an operator's nudge through a backoff.

After its deadline a saga sends no new debit or credit, first attempts, retries and replicas
alike; its compensations always go out, and past it one left without an answer blocks the
run. Each test drives in-process accounts services through the real orchestrator on a
virtual clock (saga/simulation/clock.py), counts the requests at the transport with the
orchestrator's time of each, and judges by the saga's end, its code in the log, and the
money on each service.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from saga import AccountRef, MemorySagaLog, Orchestrator, RetryPolicies, RetryPolicy, SagaRecord, SagaState, workflow
from saga.run import SagaRun, TransferResult
from saga.simulation.clock import run_in_virtual_time
from saga.workflow import DEADLINE_EXCEEDED, OUTCOME_UNKNOWN
from tests.in_process.test_saga_workflow import FAST, POLICIES, URL, ScriptedTransport, bank, ledger, steps

#: The orchestrators' clock at the start of every test, in ms since the epoch.
START_MS = 1_700_000_000_000
FORWARD = ("/debit", "/credit")


def clock_ms() -> int:
    """The orchestrators' clock: the start plus the virtual time gone by."""
    return START_MS + round(asyncio.get_running_loop().time() * 1000)


def every(seconds: float, attempts: int | None = 10, request_timeout: float = 5.0) -> RetryPolicy:
    """Retries ``seconds`` apart, without jitter, so that each attempt's time is known."""
    return RetryPolicy(
        maximum_attempts=attempts,
        initial_interval=seconds,
        backoff_coefficient=1.0,
        maximum_interval=seconds,
        jitter=0.0,
        request_timeout=request_timeout,
    )


class Clocked(ScriptedTransport):
    """Notes each request with the orchestrators' time it went out; ``slow`` answers (by path) come that late."""

    def __init__(
        self, app: Any, script: dict[str, list[str | None]] | None = None, slow: dict[str, list[float]] | None = None
    ) -> None:
        super().__init__(app, script)
        self.sent: list[tuple[str, int]] = []
        self.slow = {path: list(delays) for path, delays in (slow or {}).items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.url.path, clock_ms()))
        response = await super().handle_async_request(request)
        delays = self.slow.get(request.url.path)
        if delays:
            await asyncio.sleep(delays.pop(0))
        return response

    def forward_at_or_after(self, deadline_ms: int) -> list[tuple[str, int]]:
        return [(path, at_ms) for path, at_ms in self.sent if path in FORWARD and at_ms >= deadline_ms]


def on_the_clock(
    transport: httpx.AsyncBaseTransport,
    *,
    deadline_ms: int | None,
    policies: RetryPolicies = POLICIES,
    amount: int = 100,
) -> tuple[TransferResult, MemorySagaLog]:
    log = MemorySagaLog()

    async def run() -> TransferResult:
        orchestrator = Orchestrator(log, policies=policies, transport=transport, rng=random.Random(1), now_ms=clock_ms)
        return await orchestrator.transfer(
            AccountRef(URL, "alice"), AccountRef(URL, "bob"), amount, deadline_ms=deadline_ms
        )

    return run_in_virtual_time(run()), log


def clock_ms_of(transport: Clocked, path: str) -> int:
    """When the first request to ``path`` went out."""
    return next(at_ms for sent, at_ms in transport.sent if sent == path)


def logged(log: MemorySagaLog, transaction_id: str) -> SagaRecord:
    record = asyncio.run(log.get(transaction_id))
    assert record is not None
    return record


def balances(app: Any) -> tuple[int | None, int | None]:
    return ledger(app).balance("alice"), ledger(app).balance("bob")


# -- a debit never sent ---------------------------------------------------------------


def test_a_saga_whose_deadline_passed_before_its_debit_reads_its_trail_then_fails_sending_nothing() -> None:
    app = bank()
    transport = Clocked(app)
    result, log = on_the_clock(transport, deadline_ms=START_MS)
    # Only the trail, to be sure no run the log forgot sent a debit: no ledger request at all.
    assert transport.paths == [f"/transactions/{result.transaction_id}"]
    assert (result.state, result.error) == (SagaState.FAILED, "the deadline passed before the debit was sent")
    record = logged(log, result.transaction_id)
    assert (record.state, record.code) == (SagaState.FAILED, DEADLINE_EXCEEDED)
    history = asyncio.run(log.history(result.transaction_id))
    assert [event.state for event in history if event.kind == "state"] == [
        SagaState.PENDING,
        SagaState.DEBITING,
        SagaState.FAILED,
    ]
    assert balances(app) == (1_000, 1_000)


def test_a_submitted_saga_first_claimed_after_its_deadline_fails_without_a_request() -> None:
    app = bank()
    transport = Clocked(app)
    log = MemorySagaLog()
    submitted = SagaRecord("t-late", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100, deadline_ms=START_MS + 500)

    async def claim_late() -> TransferResult:
        await log.submit(submitted)
        await asyncio.sleep(1)
        orchestrator = Orchestrator(log, policies=POLICIES, transport=transport, now_ms=clock_ms)
        (claimed,) = await orchestrator.claim(1)
        return await orchestrator.drive(claimed)

    result = run_in_virtual_time(claim_late())
    assert transport.paths == ["/transactions/t-late"]
    assert result.state is SagaState.FAILED
    assert logged(log, "t-late").code == DEADLINE_EXCEEDED


def test_a_saga_past_its_deadline_whose_claim_a_restored_log_forgot_gives_back_what_the_lost_run_moved() -> None:
    # Submitted, claimed, debited and credited; then the log was restored from
    # a backup taken before the claim: it says no run ever drove the saga.
    app = bank()
    log = MemorySagaLog()
    submitted = SagaRecord("t-forgot", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100, deadline_ms=START_MS)
    asyncio.run(log.submit(submitted))
    ledger(app).execute("debit", "t-forgot", "alice", 100)
    ledger(app).execute("credit", "t-forgot", "bob", 100)
    transport = Clocked(app)

    async def claim() -> TransferResult:
        orchestrator = Orchestrator(log, policies=POLICIES, transport=transport, now_ms=clock_ms)
        (claimed,) = await orchestrator.claim(1)
        assert claimed.epoch == 1, "the claim looks like the first"
        return await orchestrator.drive(claimed)

    result = run_in_virtual_time(claim())
    assert transport.paths == ["/transactions/t-forgot", "/compensate_credit", "/compensate_debit"]
    assert result.state is SagaState.COMPENSATED
    record = logged(log, "t-forgot")
    assert (record.code, record.fence_credit) == (DEADLINE_EXCEEDED, True)
    assert balances(app) == (1_000, 1_000)


# -- retries stop at the deadline -------------------------------------------------------


@pytest.mark.parametrize(("deadline_after_ms", "debits"), [(2_500, 3), (2_000, 2), (2_001, 3)])
def test_debit_retries_stop_at_the_deadline_and_the_debit_is_given_back(deadline_after_ms: int, debits: int) -> None:
    # The first debit lands, its answer is lost; every retry after it is lost on the way.
    app = bank()
    transport = Clocked(app, {"/debit": ["lose", *["drop"] * 9]})
    policies = RetryPolicies(debit=every(1.0), credit=FAST, compensation=POLICIES.compensation)
    deadline_ms = START_MS + deadline_after_ms
    result, log = on_the_clock(transport, deadline_ms=deadline_ms, policies=policies)
    # One attempt a second, each checked against the deadline after its pause, right before it goes out.
    assert [path for path, _ in transport.sent][:debits] == ["/debit"] * debits
    # Only a run the log forgot can have sent the credit, but the fence costs one request: it goes first.
    assert [path for path, _ in transport.sent][debits:] == ["/compensate_credit", "/compensate_debit"]
    assert [at_ms - START_MS for _, at_ms in transport.sent][:debits] == [1_000 * n for n in range(debits)]
    assert transport.forward_at_or_after(deadline_ms) == []
    assert result.state is SagaState.COMPENSATED
    assert result.error == "the deadline passed before the debit settled"
    record = logged(log, result.transaction_id)
    assert (record.code, record.fence_credit) == (DEADLINE_EXCEEDED, True)
    assert balances(app) == (1_000, 1_000)


def test_a_debit_applied_whose_credit_could_not_go_out_before_the_deadline_is_given_back() -> None:
    app = bank()
    # The debit applies at once, its answer takes three seconds: the deadline passes meanwhile.
    transport = Clocked(app, slow={"/debit": [3.0]})
    policies = RetryPolicies(debit=every(0.0), credit=FAST, compensation=POLICIES.compensation)
    deadline_ms = START_MS + 2_000
    result, log = on_the_clock(transport, deadline_ms=deadline_ms, policies=policies)
    assert steps(result) == [("debit", 200), ("compensate_credit", 200), ("compensate_debit", 200)]
    assert transport.forward_at_or_after(deadline_ms) == []
    assert result.state is SagaState.COMPENSATED
    record = logged(log, result.transaction_id)
    assert (record.code, record.fence_credit) == (DEADLINE_EXCEEDED, True)
    assert [(entry.operation, entry.outcome) for entry in ledger(app).trail(result.transaction_id)] == [
        ("debit", "applied"),
        ("compensate_credit", "voided"),
        ("compensate_debit", "reversed"),
    ]
    assert balances(app) == (1_000, 1_000)


# -- a credit of unknown outcome at the deadline -----------------------------------------


def test_a_credit_of_unknown_outcome_whose_retry_would_fall_after_the_deadline_is_fenced_and_compensated() -> None:
    app = bank()
    transport = Clocked(app, {"/credit": ["lose"]})
    policies = RetryPolicies(debit=FAST, credit=every(1.0), compensation=POLICIES.compensation)
    deadline_ms = START_MS + 500
    result, log = on_the_clock(transport, deadline_ms=deadline_ms, policies=policies)
    assert [path for path, _ in transport.sent] == ["/debit", "/credit", "/compensate_credit", "/compensate_debit"]
    assert transport.forward_at_or_after(deadline_ms) == []
    assert result.state is SagaState.COMPENSATED
    assert result.error == "the deadline passed before the credit settled"
    record = logged(log, result.transaction_id)
    assert (record.code, record.fence_credit) == (DEADLINE_EXCEEDED, True)
    outcomes = {entry.operation: entry.outcome for entry in ledger(app).trail(result.transaction_id)}
    assert outcomes == {
        "debit": "applied",
        "credit": "applied",
        "compensate_credit": "reversed",
        "compensate_debit": "reversed",
    }
    assert balances(app) == (1_000, 1_000)


def test_a_credit_fenced_at_the_deadline_that_the_fence_finds_spent_completes() -> None:
    app = bank()

    class Spending(Clocked):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_credit":
                ledger(app).execute("debit", "bob-spends", "bob", 1_100)
            return await super().handle_async_request(request)

    transport = Spending(app, {"/credit": ["lose"]})
    policies = RetryPolicies(debit=FAST, credit=every(1.0), compensation=POLICIES.compensation)
    result, _ = on_the_clock(transport, deadline_ms=START_MS + 500, policies=policies)
    assert steps(result)[-1] == ("compensate_credit", 409)
    assert (result.state, result.error) == (SagaState.COMPLETED, "the credit landed and stands")
    assert "/compensate_debit" not in transport.paths
    assert ledger(app).balance("alice") == 900


def test_a_credit_that_succeeded_stands_though_its_answer_came_after_the_deadline() -> None:
    app = bank()
    transport = Clocked(app, slow={"/credit": [3.0]})
    policies = RetryPolicies(debit=FAST, credit=every(0.0), compensation=POLICIES.compensation)
    result, log = on_the_clock(transport, deadline_ms=START_MS + 1_000, policies=policies)
    assert steps(result) == [("debit", 200), ("credit", 200)]
    assert result.state is SagaState.COMPLETED
    assert logged(log, result.transaction_id).code is None
    assert balances(app) == (900, 1_100)


@pytest.mark.parametrize("deadline_after_ms", range(0, 6_001, 250))
def test_no_debit_or_credit_goes_out_at_or_after_the_deadline_and_the_money_adds_up(deadline_after_ms: int) -> None:
    app = bank()
    script: dict[str, list[str | None]] = {
        "/debit": ["drop", "lose", None],
        "/credit": ["lose", "drop", "drop", "drop"],
        "/compensate_credit": ["drop"],
    }
    transport = Clocked(app, script, slow={"/debit": [0.0, 0.7], "/credit": [1.3]})
    policies = RetryPolicies(debit=every(0.4), credit=every(0.9, attempts=5), compensation=every(0.5, None))
    deadline_ms = START_MS + deadline_after_ms
    result, log = on_the_clock(transport, deadline_ms=deadline_ms, policies=policies)
    if result.state is SagaState.COMPENSATING:
        # A compensation past the deadline went unanswered: this run handed it over, and the next one ends it.
        assert deadline_ms <= clock_ms_of(transport, "/compensate_credit")

        async def recover() -> list[TransferResult]:
            return await Orchestrator(log, policies=policies, transport=transport, now_ms=clock_ms).recover()

        (result,) = run_in_virtual_time(recover())
    assert transport.forward_at_or_after(deadline_ms) == []
    assert result.state in (SagaState.FAILED, SagaState.COMPENSATED, SagaState.COMPLETED)
    record = logged(log, result.transaction_id)
    if result.state is SagaState.COMPLETED:
        assert balances(app) == (900, 1_100)
    else:
        assert balances(app) == (1_000, 1_000)
        assert record.code in (DEADLINE_EXCEEDED, OUTCOME_UNKNOWN)
    if result.state is SagaState.FAILED:
        assert [path for path, _ in transport.sent if path in FORWARD] == []
        assert record.code == DEADLINE_EXCEEDED
    ledger(app).check_invariants()


# -- a saga resumed past its deadline -------------------------------------------------------


@pytest.mark.parametrize("state", [SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING])
def test_a_saga_resumed_past_its_deadline_sends_nothing_forward_and_gives_everything_back(state: SagaState) -> None:
    app = bank()
    # The lost run debited and credited; its log (exclusive: forward states ride with later commits) says less.
    record = SagaRecord("t-lost", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100, deadline_ms=START_MS)
    record.owner, record.epoch = "the-lost-run", 1
    log = MemorySagaLog(exclusive=True)
    asyncio.run(log.create(record, state))
    ledger(app).execute("debit", "t-lost", "alice", 100)
    ledger(app).execute("credit", "t-lost", "bob", 100)
    transport = Clocked(app)

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=transport, now_ms=clock_ms).recover()

    (result,) = run_in_virtual_time(recover())
    # The trail first (a resumed saga asks the services), then the compensations: nothing forward.
    assert transport.paths == ["/transactions/t-lost", "/compensate_credit", "/compensate_debit"]
    assert result.state is SagaState.COMPENSATED
    resumed = logged(log, "t-lost")
    assert (resumed.code, resumed.fence_credit) == (DEADLINE_EXCEEDED, True)
    assert balances(app) == (1_000, 1_000)


# -- the code of every end ----------------------------------------------------------------


def test_a_refused_debit_fails_with_its_refusal_code() -> None:
    app = bank()
    result, log = on_the_clock(Clocked(app), deadline_ms=None, amount=5_000)
    assert result.state is SagaState.FAILED
    assert logged(log, result.transaction_id).code == "insufficient_funds"


def test_a_refused_credit_is_compensated_with_its_refusal_code() -> None:
    app = bank(accounts={"alice": 1_000, "bob": 2**53 - 50})
    result, log = on_the_clock(Clocked(app), deadline_ms=START_MS + 60_000)
    assert steps(result) == [("debit", 200), ("credit", 409), ("compensate_debit", 200)]
    assert result.state is SagaState.COMPENSATED
    assert logged(log, result.transaction_id).code == "balance_limit_exceeded"


def test_a_credit_whose_outcome_stays_unknown_before_the_deadline_is_compensated_as_outcome_unknown() -> None:
    app = bank(credit_fault_rate=1.0)
    result, log = on_the_clock(Clocked(app), deadline_ms=START_MS + 60_000)
    assert result.state is SagaState.COMPENSATED
    assert logged(log, result.transaction_id).code == OUTCOME_UNKNOWN


def test_a_completed_saga_has_no_code() -> None:
    app = bank()
    result, log = on_the_clock(Clocked(app), deadline_ms=START_MS + 60_000)
    assert result.state is SagaState.COMPLETED
    assert logged(log, result.transaction_id).code is None


def test_a_blocked_compensation_resumed_by_a_recovery_ends_with_the_code_logged_when_it_began() -> None:
    app = bank()
    # Past the deadline one unanswered compensation blocks the run.
    transport = Clocked(app, {"/credit": ["lose"], "/compensate_debit": ["drop"]})
    policies = RetryPolicies(debit=FAST, credit=every(1.0), compensation=FAST)
    blocked, log = on_the_clock(transport, deadline_ms=START_MS + 500, policies=policies)
    assert blocked.state is SagaState.COMPENSATING
    assert logged(log, blocked.transaction_id).code == DEADLINE_EXCEEDED, "why it compensates, while it does"

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=POLICIES, transport=transport, now_ms=clock_ms).recover()

    (recovered,) = run_in_virtual_time(recover())
    assert steps(recovered) == [("compensate_credit", 200), ("compensate_debit", 200)]
    assert recovered.state is SagaState.COMPENSATED
    assert logged(log, blocked.transaction_id).code == DEADLINE_EXCEEDED
    assert balances(app) == (1_000, 1_000)


# -- an operator's nudge through a compensation's backoff -----------------------------------


def test_a_run_given_no_nudge_waits_its_backoff_out() -> None:
    app = bank(credit_fault_rate=1.0)
    second_apart = RetryPolicy(maximum_attempts=None, initial_interval=1.0, maximum_interval=1.0, jitter=0.0)
    policies = RetryPolicies(debit=FAST, credit=FAST, compensation=second_apart)
    transport = Clocked(app, {"/compensate_debit": ["drop"]})

    async def scenario() -> SagaState:
        log = MemorySagaLog()
        run = a_run(log, transport, policies, None)
        await log.create(run.record, SagaState.PENDING)
        return await workflow.transfer(run)

    assert run_in_virtual_time(scenario()) is SagaState.COMPENSATED
    compensations = [at_ms for path, at_ms in transport.sent if path == "/compensate_debit"]
    assert len(compensations) == 2


def a_run(
    log: MemorySagaLog, transport: httpx.AsyncBaseTransport, policies: RetryPolicies, nudge: asyncio.Event | None
) -> SagaRun:
    record = SagaRecord("t-nudged", AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)
    return SagaRun(
        record,
        log,
        Orchestrator(log, transport=transport).client_for,
        policies,
        random.Random(1),
        lambda: START_MS,
        nudge=nudge,
    )


def test_a_nudge_sends_a_compensations_next_attempt_at_once_on_a_real_loop() -> None:
    app = bank(credit_fault_rate=1.0)
    hour_apart = RetryPolicy(maximum_attempts=None, initial_interval=3_600.0, maximum_interval=3_600.0, jitter=0.0)
    policies = RetryPolicies(debit=FAST, credit=FAST, compensation=hour_apart)

    class Noting(ScriptedTransport):
        def __init__(self) -> None:
            super().__init__(app, {"/compensate_debit": ["drop"]})
            self.first_compensation_lost = asyncio.Event()
            self.times: list[float] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/compensate_debit":
                self.times.append(asyncio.get_running_loop().time())
                if len(self.times) == 1:
                    self.first_compensation_lost.set()
            return await super().handle_async_request(request)

    async def scenario() -> tuple[SagaState, list[float], float]:
        log, transport, nudge = MemorySagaLog(), Noting(), asyncio.Event()
        run = a_run(log, transport, policies, nudge)
        await log.create(run.record, SagaState.PENDING)
        saga = asyncio.create_task(workflow.transfer(run))
        await transport.first_compensation_lost.wait()
        await asyncio.sleep(0.05)  # well into the hour's backoff
        nudged_at = asyncio.get_running_loop().time()
        nudge.set()
        async with asyncio.timeout(10):
            state = await saga
        return state, transport.times, nudged_at

    state, times, nudged_at = asyncio.run(scenario())
    assert state is SagaState.COMPENSATED
    assert len(times) == 2
    assert 0 <= times[1] - nudged_at < 1.0, "the next attempt goes out at once, not after the hour"


def test_a_nudge_cuts_one_backoff_short_and_is_cleared_by_it() -> None:
    app = bank(credit_fault_rate=1.0)
    minute_apart = RetryPolicy(maximum_attempts=None, initial_interval=60.0, maximum_interval=60.0, jitter=0.0)
    policies = RetryPolicies(debit=FAST, credit=FAST, compensation=minute_apart)
    transport = Clocked(app, {"/compensate_debit": ["drop", "drop"]})

    async def scenario() -> SagaState:
        log, nudge = MemorySagaLog(), asyncio.Event()
        run = a_run(log, transport, policies, nudge)
        await log.create(run.record, SagaState.PENDING)
        asyncio.get_running_loop().call_later(10, nudge.set)
        return await workflow.transfer(run)

    assert run_in_virtual_time(scenario()) is SagaState.COMPENSATED
    compensations = [at_ms - START_MS for path, at_ms in transport.sent if path == "/compensate_debit"]
    # Lost at 0; nudged at 10 s, lost again; then the full minute, since the nudge was cleared.
    assert compensations == [0, 10_000, 70_000]


def test_a_credit_the_deadline_kept_back_is_fenced_since_a_run_a_restored_log_forgot_may_have_sent_it() -> None:
    app = bank()
    alice, bob = AccountRef(URL, "alice"), AccountRef(URL, "bob")

    async def scenario() -> TransferResult:
        # The run that a log restored from a backup forgot: its debit and credit both landed.
        forgotten = Orchestrator(
            MemorySagaLog(), policies=POLICIES, transport=Clocked(app), now_ms=clock_ms, new_id=lambda: "t-1"
        )
        assert (await forgotten.transfer(alice, bob, 100)).state is SagaState.COMPLETED
        # The restored log holds the saga as submitted: unclaimed, with a deadline.
        log = MemorySagaLog()
        now = clock_ms()
        await log.submit(
            SagaRecord("t-1", alice, bob, 100, created_at_ms=now, updated_at_ms=now, deadline_ms=now + 500)
        )
        # The debit's replay answers late: the deadline passes before the credit would go out.
        late = Clocked(app, slow={"/debit": [0.9]})
        orchestrator = Orchestrator(log, policies=POLICIES, transport=late, rng=random.Random(1), now_ms=clock_ms)
        (claimed,) = await orchestrator.claim(1)
        return await orchestrator.drive(claimed)

    result = run_in_virtual_time(scenario())
    assert ("compensate_credit", 200) in steps(result), "the credit is fenced before the debit is given back"
    assert result.state is SagaState.COMPENSATED
    assert balances(app) == (1_000, 1_000), "without the fence the forgotten credit stood and 100 were minted"


def test_a_debit_the_deadline_kept_back_is_undone_when_a_run_a_restored_log_forgot_sent_it() -> None:
    app = bank()
    alice, bob = AccountRef(URL, "alice"), AccountRef(URL, "bob")

    async def scenario() -> tuple[TransferResult, MemorySagaLog, Clocked]:
        forgotten = Orchestrator(
            MemorySagaLog(), policies=POLICIES, transport=Clocked(app), now_ms=clock_ms, new_id=lambda: "t-1"
        )
        assert (await forgotten.transfer(alice, bob, 100)).state is SagaState.COMPLETED
        # The restored log holds the saga as submitted, and its deadline has passed by the time a run takes it up.
        log = MemorySagaLog()
        now = clock_ms()
        await log.submit(SagaRecord("t-1", alice, bob, 100, created_at_ms=now, updated_at_ms=now, deadline_ms=now))
        transport = Clocked(app)
        orchestrator = Orchestrator(log, policies=POLICIES, transport=transport, now_ms=clock_ms)
        (claimed,) = await orchestrator.claim(1)
        return await orchestrator.drive(claimed), log, transport

    result, log, transport = run_in_virtual_time(scenario())
    assert [path for path, _ in transport.sent if path in FORWARD] == [], "nothing goes forward after the deadline"
    assert steps(result) == [("compensate_credit", 200), ("compensate_debit", 200)]
    record = logged(log, "t-1")
    assert (record.state, record.code, record.fence_credit) == (SagaState.COMPENSATED, DEADLINE_EXCEEDED, True)
    history = asyncio.run(log.history("t-1"))
    (entered,) = [event for event in history if event.state is SagaState.COMPENSATING]
    assert entered.detail == "the deadline passed; a run the log lacks may have sent the debit"
    assert balances(app) == (1_000, 1_000)


def test_past_the_deadline_a_compensation_without_an_answer_blocks_after_one_attempt_and_recovery_ends_it() -> None:
    # The bank stops answering compensations: without a deadline the run would retry them for ever.
    app = bank()
    transport = Clocked(app, {"/credit": ["lose"], "/compensate_debit": ["drop"] * 50})
    policies = RetryPolicies(debit=FAST, credit=every(1.0), compensation=every(1.0, attempts=None))
    deadline_ms = START_MS + 500
    blocked, log = on_the_clock(transport, deadline_ms=deadline_ms, policies=policies)
    assert [path for path, _ in transport.sent] == ["/debit", "/credit", "/compensate_credit", "/compensate_debit"]
    assert blocked.state is SagaState.COMPENSATING
    assert "compensate_debit blocked" in (logged(log, blocked.transaction_id).last_error or "")
    assert balances(app) == (900, 1_000)

    # A later run (a recovery, a worker, an operator's retry) sends it again, once per run.
    transport.script["/compensate_debit"] = []

    async def recover() -> list[TransferResult]:
        return await Orchestrator(log, policies=policies, transport=transport, now_ms=clock_ms).recover()

    (recovered,) = run_in_virtual_time(recover())
    assert recovered.state is SagaState.COMPENSATED
    assert balances(app) == (1_000, 1_000)


def test_before_the_deadline_a_compensation_without_an_answer_is_retried() -> None:
    app = bank()
    transport = Clocked(app, {"/credit": ["lose"], "/compensate_debit": ["drop"] * 2})
    policies = RetryPolicies(debit=FAST, credit=every(1.0, attempts=1), compensation=every(1.0, attempts=None))
    result, _ = on_the_clock(transport, deadline_ms=START_MS + 60_000, policies=policies)
    assert [path for path, _ in transport.sent].count("/compensate_debit") == 3
    assert result.state is SagaState.COMPENSATED
    assert balances(app) == (1_000, 1_000)


def test_an_unreadable_trail_is_read_again_after_each_backoff_of_the_debit_policy() -> None:
    app = bank()

    class TrailLostTwice(Clocked):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            reads = [path for path, _ in self.sent if path.startswith("/transactions/")]
            if request.url.path.startswith("/transactions/") and len(reads) < 2:
                self.sent.append((request.url.path, clock_ms()))
                raise httpx.ConnectError("request lost", request=request)
            return await super().handle_async_request(request)

    transport = TrailLostTwice(app)
    policies = RetryPolicies(debit=every(1.0), credit=FAST, compensation=POLICIES.compensation)
    result, _ = on_the_clock(transport, deadline_ms=START_MS, policies=policies)
    reads = [at_ms - START_MS for path, at_ms in transport.sent if path.startswith("/transactions/")]
    assert reads == [0, 1_000, 2_000]
    assert (result.state, result.error) == (SagaState.FAILED, "the deadline passed before the debit was sent")
