"""What one saga run makes durable, and when: seen from the services, as each request goes out.

On an exclusive log (one orchestrator, as with SQLite) forward state changes
and attempts ride with the next commit, except the first answer from each
service's ledger; on a shared log everything is durable before each request.
A service that answers from another ledger than before stops the saga for an
operator (NEEDS_ATTENTION), also when the earlier answer came in a lost run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import httpx
import pytest

from saga import AccountRef, MemorySagaLog, Orchestrator, SagaRecord, SagaState
from saga.ledgers import Quarantine
from saga.logs import SagaLogError
from saga.records import Event
from saga.retry import RetryPolicies, RetryPolicy
from saga.run import LedgerChanged, SagaRun, TransferResult
from saga.steps import CREDIT, DEBIT
from saga.waits import Backoff, RequestOut
from tests.in_process.test_saga_decisions import LIMITED, SOURCE_URL, TARGET_URL, Banks
from tests.in_process.test_saga_workflow import FAST, POLICIES, URL, ScriptedTransport, bank, ledger, steps
from tests.support.failing_logs import FailingWriteOnce

TID = "t-1"
OWNER = "orchestrator-1"


def summary(event: Event) -> str:
    if event.attempt is not None:
        return f"{event.attempt.step} #{event.attempt.number}: {event.attempt.status}"
    if event.state is not None:
        return event.state.name
    return event.kind


class Watching(httpx.AsyncBaseTransport):
    """Notes what the log holds of the saga as each request goes out: what was durable before it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, log: MemorySagaLog) -> None:
        self.inner = inner
        self.log = log
        self.seen: list[tuple[str, list[str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        durable = [summary(event) for event in await self.log.history(TID)]
        self.seen.append((request.url.path.lstrip("/"), durable))
        return await self.inner.handle_async_request(request)


class Crash(BaseException):
    """The orchestrator's process dies while this request is on its way."""


class CrashingOn(ScriptedTransport):
    """Forwards to ``app`` until the ``nth`` request to ``path``, during which the orchestrator dies."""

    def __init__(self, app: Any, path: str, nth: int = 1) -> None:
        super().__init__(app)
        self.crash_on = path
        self.nth = nth

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.crash_on and self.paths.count(self.crash_on) == self.nth - 1:
            raise Crash
        return await super().handle_async_request(request)


def ticks() -> Any:
    counter = itertools.count(1_000)
    return lambda: next(counter)


def transfer(
    transport: httpx.AsyncBaseTransport,
    log: MemorySagaLog,
    *,
    source: AccountRef | None = None,
    target: AccountRef | None = None,
    policies: Any = POLICIES,
) -> TransferResult:
    async def run() -> TransferResult:
        orchestrator = Orchestrator(
            log,
            policies=policies,
            transport=transport,
            rng=random.Random(1),
            new_id=lambda: TID,
            owner=OWNER,
            now_ms=ticks(),
        )
        return await orchestrator.transfer(source or AccountRef(URL, "alice"), target or AccountRef(URL, "bob"), 100)

    return asyncio.run(run())


def recover(log: MemorySagaLog, transport: httpx.AsyncBaseTransport) -> TransferResult:
    async def run() -> list[TransferResult]:
        # Long after the lost run's lease ran out.
        later = itertools.count(10**9)
        orchestrator = Orchestrator(
            log, policies=LIMITED, transport=transport, owner="orchestrator-2", now_ms=lambda: next(later)
        )
        return await orchestrator.recover()

    (result,) = asyncio.run(run())
    return result


def history(log: MemorySagaLog) -> list[Event]:
    return asyncio.run(log.history(TID))


# -- what is durable before each request ------------------------------------------


def test_on_an_exclusive_log_an_attempt_without_an_answer_rides_with_the_commit_before_the_credit() -> None:
    app = bank()
    log = MemorySagaLog(exclusive=True)
    watching = Watching(ScriptedTransport(app, {"/debit": ["drop"]}), log)
    result = transfer(watching, log)
    assert result.state is SagaState.COMPLETED
    assert watching.seen == [
        ("debit", ["PENDING", "DEBITING"]),
        ("debit", ["PENDING", "DEBITING"]),
        ("credit", ["PENDING", "DEBITING", "debit #1: None", "debit #2: 200", "CREDITING"]),
    ]
    assert [summary(event) for event in history(log)][-2:] == ["credit #1: 200", "COMPLETED"]


def test_on_an_exclusive_log_the_first_answer_of_each_ledger_is_durable_before_the_next_request() -> None:
    source_app, target_app = bank(), bank(credit_fault_rate=1.0)
    log = MemorySagaLog(exclusive=True)
    watching = Watching(Banks(ScriptedTransport(source_app), ScriptedTransport(target_app)), log)
    result = transfer(
        watching, log, source=AccountRef(SOURCE_URL, "alice"), target=AccountRef(TARGET_URL, "bob"), policies=LIMITED
    )
    assert result.state is SagaState.COMPENSATED
    debited = ["PENDING", "DEBITING", "debit #1: 200", "CREDITING"]
    first_credit = [*debited, "credit #1: 500"]
    compensating = [*first_credit, "credit #2: 500", "credit #3: 500", "COMPENSATING"]
    assert watching.seen == [
        ("debit", ["PENDING", "DEBITING"]),
        ("credit", debited),
        ("credit", first_credit),
        # The target's ledger is logged already: this attempt's answer rides with a later commit.
        ("credit", first_credit),
        # Everything is durable before a compensation, which the services replay after a crash.
        ("compensate_credit", compensating),
        ("compensate_debit", [*compensating, "compensate_credit #1: 200"]),
    ]
    assert [summary(event) for event in history(log)][-2:] == ["compensate_debit #1: 200", "COMPENSATED"]
    ledgers = {(attempt.step, attempt.ledger_id) for attempt in result.attempts}
    assert len({ledger_id for _, ledger_id in ledgers}) == 2
    assert ledgers == {
        (attempt.step, attempt.ledger_id)
        for attempt in (event.attempt for event in history(log))
        if attempt is not None
    }


def test_on_a_shared_log_every_attempt_is_durable_before_the_next_request() -> None:
    source_app, target_app = bank(), bank(credit_fault_rate=1.0)
    log = MemorySagaLog()
    watching = Watching(Banks(ScriptedTransport(source_app, {"/debit": ["drop"]}), ScriptedTransport(target_app)), log)
    result = transfer(
        watching, log, source=AccountRef(SOURCE_URL, "alice"), target=AccountRef(TARGET_URL, "bob"), policies=LIMITED
    )
    assert result.state is SagaState.COMPENSATED
    debited = ["PENDING", "DEBITING", "debit #1: None", "debit #2: 200", "CREDITING"]
    compensating = [*debited, "credit #1: 500", "credit #2: 500", "credit #3: 500", "COMPENSATING"]
    assert watching.seen == [
        ("debit", ["PENDING", "DEBITING"]),
        ("debit", ["PENDING", "DEBITING", "debit #1: None"]),
        ("credit", debited),
        ("credit", [*debited, "credit #1: 500"]),
        ("credit", [*debited, "credit #1: 500", "credit #2: 500"]),
        ("compensate_credit", compensating),
        ("compensate_debit", [*compensating, "compensate_credit #1: 200"]),
    ]


def test_a_saga_recovered_from_pending_on_an_exclusive_log_logs_debiting_with_its_debit_at_the_time_it_entered_it() -> (
    None
):
    app = bank()
    log = MemorySagaLog(exclusive=True)
    asyncio.run(log.create(SagaRecord(TID, AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100), SagaState.PENDING))
    watching = Watching(ScriptedTransport(app), log)
    result = recover(log, watching)
    assert result.state is SagaState.COMPLETED
    assert watching.seen == [
        ("debit", ["PENDING", "PENDING", "claim"]),
        ("credit", ["PENDING", "PENDING", "claim", "DEBITING", "debit #1: 200", "CREDITING"]),
    ]
    claimed = 10**9
    by_this_run = [(summary(event), event.at_ms, event.owner, event.epoch) for event in history(log)[3:]]
    assert by_this_run == [
        # Entered before the debit was sent, committed with the state the debit led to; each
        # attempt at the time its request went out, although it was committed later.
        ("DEBITING", claimed + 1, "orchestrator-2", 1),
        ("debit #1: 200", claimed + 2, "orchestrator-2", 1),
        ("CREDITING", claimed + 3, "orchestrator-2", 1),
        ("credit #1: 200", claimed + 5, "orchestrator-2", 1),
        ("COMPLETED", claimed + 6, "orchestrator-2", 1),
    ]
    assert [event.detail for event in history(log)] == [None] * 8
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)


def test_every_commit_of_a_run_is_made_under_its_owner_and_epoch() -> None:
    app = bank()
    log = MemorySagaLog()
    transfer(ScriptedTransport(app, {"/credit": ["drop"]}), log)
    committed = [(summary(event), event.owner, event.epoch) for event in history(log)[1:]]
    assert committed == [
        ("DEBITING", OWNER, 1),
        ("debit #1: 200", OWNER, 1),
        ("CREDITING", OWNER, 1),
        ("credit #1: None", OWNER, 1),
        ("credit #2: 200", OWNER, 1),
        ("COMPLETED", OWNER, 1),
    ]


def test_forward_changes_whose_commit_failed_on_an_exclusive_log_are_committed_in_order_with_the_next_change() -> None:
    app = bank()
    # The first commit after the saga's creation is the one before the credit.
    log = FailingWriteOnce(fail_at=1)
    record = SagaRecord(TID, AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100, owner=OWNER, epoch=1)
    transport = ScriptedTransport(app)

    async def scenario() -> SagaRun:
        await log.create(record, SagaState.PENDING)
        run = SagaRun(
            record,
            log,
            lambda url: Orchestrator(log, transport=transport).client_for(url),
            POLICIES,
            random.Random(1),
            ticks(),
        )
        await run.enter(SagaState.DEBITING)
        assert (await run.step(DEBIT)).applied
        await run.enter(SagaState.CREDITING)
        with pytest.raises(SagaLogError):
            await run.step(CREDIT)
        await run.enter(SagaState.COMPENSATING, fence_credit=True, because="the log failed")
        return run

    asyncio.run(scenario())
    assert transport.paths == ["/debit"], "no request goes out before what it depends on is durable"
    assert [(summary(event), event.detail) for event in history(log)] == [
        ("PENDING", None),
        ("PENDING", None),
        ("DEBITING", None),
        ("debit #1: 200", None),
        ("CREDITING", None),
        ("COMPENSATING", "the log failed"),
    ]
    logged = asyncio.run(log.get(TID))
    assert logged is not None
    assert (logged.state, logged.fence_credit, logged.attempts) == (SagaState.COMPENSATING, True, 1)


# -- a service that forgot the saga ------------------------------------------------


def forgotten(transaction_id: str, service: str, before: str | None, now: str | None) -> str:
    return (
        f"the ledger of the service at {service} changed within saga {transaction_id}, from {before} to {now}: "
        "the service has forgotten what it did under this transaction_id; compare its balances and audit "
        "trail with this saga's history before moving any money by hand"
    )


class Restarting(httpx.AsyncBaseTransport):
    """One memory service, restarted (a new ledger, its balances as configured) after ``requests`` requests."""

    def __init__(self, requests: int) -> None:
        self.before, self.after = bank(), bank()
        self.requests = requests
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        app = self.before if self.sent <= self.requests else self.after
        return await httpx.ASGITransport(app=app).handle_async_request(request)


@pytest.mark.parametrize("exclusive", [False, True], ids=["shared", "exclusive"])
def test_a_service_answering_from_a_new_ledger_mid_saga_stops_it_for_an_operator(exclusive: bool) -> None:
    log = MemorySagaLog(exclusive=exclusive)
    service = Restarting(requests=1)
    result = transfer(service, log)
    assert steps(result) == [("debit", 200), ("credit", 200)]
    debited, credited = (attempt.ledger_id for attempt in result.attempts)
    assert debited is not None
    assert credited is not None
    assert debited != credited
    message = forgotten(TID, URL, debited, credited)
    assert (result.state, result.error) == (SagaState.NEEDS_ATTENTION, message)
    assert [(summary(event), event.detail) for event in history(log)][-4:] == [
        ("debit #1: 200", None),
        ("CREDITING", None),
        ("credit #1: 200", None),
        ("NEEDS_ATTENTION", message),
    ]
    assert [event.attempt.ledger_id for event in history(log) if event.attempt is not None] == [debited, credited]
    logged = asyncio.run(log.get(TID))
    assert logged is not None
    assert (logged.state, logged.last_error) == (SagaState.NEEDS_ATTENTION, message)


def test_the_ledger_changed_error_names_the_service() -> None:
    log = MemorySagaLog()
    service = Restarting(requests=1)
    record = SagaRecord(TID, AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    async def scenario() -> LedgerChanged:
        await log.create(record, SagaState.DEBITING)
        run = SagaRun(
            record,
            log,
            lambda url: Orchestrator(log, transport=service).client_for(url),
            POLICIES,
            random.Random(1),
            ticks(),
        )
        await run.step(DEBIT)
        with pytest.raises(LedgerChanged) as raised:
            await run.step(CREDIT)
        return raised.value

    changed = asyncio.run(scenario())
    assert changed.service == URL
    assert str(changed).startswith(f"the ledger of the service at {URL} changed within saga {TID}, from ")


def test_a_recovered_saga_whose_one_logged_answer_came_from_a_ledger_since_replaced_needs_attention() -> None:
    first = bank()
    log = MemorySagaLog(exclusive=True)
    with pytest.raises(Crash):
        transfer(CrashingOn(first, "/credit"), log)
    (debited,) = (event.attempt.ledger_id for event in history(log) if event.attempt is not None)
    crashed = asyncio.run(log.get(TID))
    assert crashed is not None
    assert (crashed.state, crashed.attempts) == (SagaState.CREDITING, 1)

    restarted = bank()
    result = recover(log, ScriptedTransport(restarted))
    # The trail the resumed saga reads first already comes from another ledger: no credit is sent.
    assert steps(result) == []
    assert debited is not None
    assert result.state is SagaState.NEEDS_ATTENTION
    assert result.error is not None
    assert f"the service {URL} has forgotten what it did: its ledger was replaced: {debited}" in result.error
    assert [summary(event) for event in history(log)][-1:] == ["NEEDS_ATTENTION"]
    assert [(q.service, q.transaction_id) for q in asyncio.run(log.quarantines())] == [(URL, TID)]


def test_a_recovered_saga_whose_target_answered_from_a_ledger_since_replaced_needs_attention() -> None:
    source_app = bank()
    log = MemorySagaLog(exclusive=True)
    # The first credit gets its 500; the orchestrator dies during the second.
    crashing_target = CrashingOn(bank(credit_fault_rate=1.0), "/credit", nth=2)
    source, target = AccountRef(SOURCE_URL, "alice"), AccountRef(TARGET_URL, "bob")
    with pytest.raises(Crash):
        transfer(Banks(ScriptedTransport(source_app), crashing_target), log, source=source, target=target)
    logged = {event.attempt.step: event.attempt.ledger_id for event in history(log) if event.attempt is not None}
    crashed = asyncio.run(log.get(TID))
    assert crashed is not None
    assert (crashed.state, crashed.attempts) == (SagaState.CREDITING, 2)

    result = recover(log, Banks(ScriptedTransport(source_app), ScriptedTransport(bank())))
    assert steps(result) == [], "the target's trail comes from a new ledger: nothing is sent"
    assert result.state is SagaState.NEEDS_ATTENTION
    assert result.error is not None
    assert f"the service {TARGET_URL} has forgotten what it did: its ledger was replaced: {logged['credit']}" in (
        result.error
    )
    assert ledger(source_app).balance("alice") == 900, "no money moves by itself once the saga needs attention"


def test_a_recovered_saga_whose_services_kept_their_ledgers_completes() -> None:
    app = bank()
    log = MemorySagaLog(exclusive=True)
    with pytest.raises(Crash):
        transfer(CrashingOn(app, "/credit"), log)
    result = recover(log, ScriptedTransport(app))
    assert (result.state, steps(result)) == (SagaState.COMPLETED, [("credit", 200)])
    assert (ledger(app).balance("alice"), ledger(app).balance("bob")) == (900, 1_100)


# -- what an operator reads in the logs ---------------------------------------------


def test_each_retry_is_logged_with_its_saga_step_and_attempt_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    app = bank()
    with caplog.at_level("INFO", logger="saga"):
        transfer(ScriptedTransport(app, {"/debit": ["drop"], "/credit": ["drop", "drop"]}), MemorySagaLog())
    fields = [record.__dict__.get("fields") for record in caplog.records if "retrying" in record.getMessage()]
    assert fields == [
        {"transaction_id": TID, "step": "debit", "attempt": 1},
        {"transaction_id": TID, "step": "credit", "attempt": 1},
        {"transaction_id": TID, "step": "credit", "attempt": 2},
    ]


# -- what a person watching the run is told (saga/waits.py) --------------------------


class Told:
    """Every request and backoff a run tells of, in order, as plain tuples."""

    def __init__(self) -> None:
        self.told: list[tuple[Any, ...]] = []

    def sending(self, request: RequestOut) -> None:
        self.told.append(("sending", request.transaction_id, request.step, request.attempt, request.attempts))
        self.told.append(("to", request.url, request.timeout))

    def answered(self, request: RequestOut) -> None:
        self.told.append(("answered", request.step, request.attempt))

    def backing_off(self, backoff: Backoff) -> None:
        failed = backoff.failed
        why = failed.code or failed.error
        self.told.append(("backoff", backoff.transaction_id, failed.step, failed.number, backoff.attempts, why))
        self.told.append(("for", backoff.delay))


def test_a_run_tells_of_each_request_as_it_goes_and_comes_back_and_of_each_backoff_before_it_waits() -> None:
    app = bank(credit_fault_rate=1.0)
    doubling = RetryPolicy(
        maximum_attempts=3, initial_interval=0.001, backoff_coefficient=2.0, maximum_interval=1.0, jitter=0.0
    )
    compensation = RetryPolicy(maximum_attempts=None, initial_interval=0.0, maximum_interval=0.0, request_timeout=2.0)
    policies = RetryPolicies(debit=FAST, credit=doubling, compensation=compensation)
    told = Told()

    async def run() -> TransferResult:
        orchestrator = Orchestrator(
            MemorySagaLog(),
            policies=policies,
            transport=ScriptedTransport(app, {"/debit": ["drop"]}),
            new_id=lambda: TID,
            now_ms=ticks(),
            waits=told,
        )
        return await orchestrator.transfer(AccountRef(URL, "alice"), AccountRef(URL, "bob"), 100)

    result = asyncio.run(run())
    assert result.state is SagaState.COMPENSATED

    def attempt(step: str, number: int, attempts: int | None, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        return [("sending", TID, step, number, attempts), ("to", URL, timeout), ("answered", step, number)]

    assert told.told == [
        *attempt("debit", 1, 3, timeout=1.0),
        ("backoff", TID, "debit", 1, 3, "unreachable: ConnectError: request lost"),
        ("for", 0.0),
        *attempt("debit", 2, 3, timeout=1.0),
        *attempt("credit", 1, 3),
        ("backoff", TID, "credit", 1, 3, "injected_fault"),
        ("for", 0.001),
        *attempt("credit", 2, 3),
        ("backoff", TID, "credit", 2, 3, "injected_fault"),
        ("for", 0.002),
        # The last attempt the policy allows is not followed by a backoff: the saga compensates.
        *attempt("credit", 3, 3),
        *attempt("compensate_credit", 1, None, timeout=2.0),
        *attempt("compensate_debit", 1, None, timeout=2.0),
    ]


# -- ledgers that went back in time (saga/ledgers.py) ---------------------------------


class PositionRewriting(ScriptedTransport):
    """Answers ``path`` (every path: None) with its Ledger-Position set to ``position`` (None: without the header)."""

    def __init__(self, app: Any, path: str | None, position: int | None) -> None:
        super().__init__(app)
        self.path = path
        self.position = position

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if self.path in (None, request.url.path):
            del response.headers["ledger-position"]
            if self.position is not None:
                response.headers["ledger-position"] = str(self.position)
        return response


def test_a_live_saga_answered_below_the_ledgers_mark_stops_and_quarantines_the_service() -> None:
    log = MemorySagaLog()
    app = bank()
    # The debit answers at position 1; the credit (restored from a copy of before it) at 0.
    result = transfer(PositionRewriting(app, "/credit", 0), log)
    assert result.state is SagaState.NEEDS_ATTENTION
    assert steps(result) == [("debit", 200), ("credit", 200)]
    assert result.error is not None
    assert f"saga {TID}: the service {URL} has forgotten what it did" in result.error
    assert "went back from position 1 to 0" in result.error
    (quarantine,) = asyncio.run(log.quarantines())
    assert (quarantine.service, quarantine.transaction_id) == (URL, TID)


def test_a_service_that_names_no_ledger_position_is_not_judged_by_one() -> None:
    log = MemorySagaLog()
    result = transfer(PositionRewriting(bank(), "/credit", None), log)
    assert result.state is SagaState.COMPLETED
    assert asyncio.run(log.quarantines()) == []


@pytest.mark.parametrize("quarantined", [SOURCE_URL, TARGET_URL])
def test_an_unfinished_saga_meeting_a_quarantined_service_stops_before_any_request(quarantined: str) -> None:
    source_app, target_app = bank(), bank()
    log = MemorySagaLog(exclusive=True)
    record = SagaRecord(TID, AccountRef(SOURCE_URL, "alice"), AccountRef(TARGET_URL, "bob"), 100)
    record.owner, record.epoch = "the-lost-run", 1
    asyncio.run(log.create(record, SagaState.COMPENSATING))
    asyncio.run(log.quarantine(Quarantine(quarantined, "its ledger went back from position 9 to 3", 1)))
    source, target = ScriptedTransport(source_app), ScriptedTransport(target_app)
    result = recover(log, Banks(source, target))
    assert result.state is SagaState.NEEDS_ATTENTION
    assert source.paths == []
    assert target.paths == []
    assert result.error is not None
    assert f"saga {TID}: {quarantined} is quarantined: its ledger went back from position 9 to 3" in result.error


def test_without_positions_a_recovered_saga_still_learns_its_ledgers_from_its_history() -> None:
    first = bank()
    log = MemorySagaLog(exclusive=True)
    with pytest.raises(Crash):
        transfer(CrashingOn(first, "/credit"), log)
    (debited,) = (event.attempt.ledger_id for event in history(log) if event.attempt is not None)
    assert debited is not None

    # A service from before Ledger-Position: its answers name the ledger, never its position.
    result = recover(log, PositionRewriting(bank(), None, None))
    (credited,) = (attempt.ledger_id for attempt in result.attempts)
    assert credited is not None
    message = forgotten(TID, URL, debited, credited)
    assert (result.state, result.error) == (SagaState.NEEDS_ATTENTION, message)
    (quarantine,) = asyncio.run(log.quarantines())
    assert quarantine == Quarantine(
        URL, f"its ledger changed within saga {TID}, from {debited} to {credited}", quarantine.at_ms, TID
    )
