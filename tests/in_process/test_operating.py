"""Console progress off a terminal, and the saga metrics read off the log's traffic."""

from __future__ import annotations

import asyncio
import io

from prometheus_client import generate_latest

from saga.cli.terminal import PlainProgress
from saga.logs import MemorySagaLog, SagaLog
from saga.records import AccountRef, ActionKind, Attempt, Change, OperatorAction, Resolution, SagaRecord
from saga.states import SagaState
from saga.telemetry.metrics import ObservedSagaLog, SagaMetrics
from tests.support.metrics import label_values, parse, value


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_a_line_every_interval_and_the_last_one_never_a_carriage_return() -> None:
    err, clock = io.StringIO(), Clock()
    progress = PlainProgress(err, "transfers", interval=5.0, clock=clock)
    for done in range(1, 101):
        clock.now = done * 0.1  # ten seconds over the hundred transfers
        progress(done, 100)
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines == ["  1/100 transfers (1%)", "  51/100 transfers (51%)", "  100/100 transfers (100%)"]


def test_a_saga_stuck_in_compensating_shows_in_the_state_gauge_and_the_oldest_age() -> None:
    metrics = SagaMetrics()

    async def scenario() -> None:
        log = ObservedSagaLog(MemorySagaLog(), metrics)
        record = SagaRecord("t1", AccountRef("http://a", "alice"), AccountRef("http://b", "bob"), 10)
        await log.create(record, SagaState.DEBITING)
        debited = Attempt("debit", 1, 200, None, 1500)
        await log.commit(Change("t1", 1_000, SagaState.CREDITING, None, [debited]))
        faults = [Attempt("credit", number, 500, "injected_fault", 2000) for number in (1, 2)]
        await log.commit(Change("t1", 2_000, SagaState.COMPENSATING, True, faults))

    asyncio.run(scenario())
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "saga_sagas", state="COMPENSATING") == 1
    assert value(samples, "saga_sagas", state="COMPLETED") == 0
    # Entered COMPENSATING at 2 s after the epoch: decades ago, so above any alert threshold.
    assert value(samples, "saga_compensating_oldest_age_seconds") > 5 * 60
    assert value(samples, "saga_compensations_total") == 1
    assert value(samples, "saga_retries_total", step="credit") == 1
    assert value(samples, "saga_steps_total", step="credit", outcome="unknown", code="injected_fault") == 2
    assert value(samples, "saga_steps_total", step="debit", outcome="ok") == 1
    assert value(samples, "saga_transitions_total", from_state="CREDITING", to_state="COMPENSATING") == 1
    assert value(samples, "saga_log_commit_duration_seconds_count") == 3


def _action(transaction_id: str, kind: ActionKind, resolution: Resolution | None = None) -> OperatorAction:
    return OperatorAction(transaction_id, kind, "op-ada", "checked the trails", 5_000, resolution)


def _saga(transaction_id: str) -> SagaRecord:
    return SagaRecord(transaction_id, AccountRef("http://a", "alice"), AccountRef("http://b", "bob"), 10)


def test_the_state_gauge_lists_every_state_and_counts_cancels_and_resolves_as_state_changes() -> None:
    metrics = SagaMetrics()

    async def scenario() -> None:
        log = ObservedSagaLog(MemorySagaLog(), metrics)
        await log.submit(_saga("t1"))
        await log.act(_action("t1", ActionKind.CANCEL))
        await log.create(_saga("t2"), SagaState.DEBITING)
        await log.commit(Change("t2", 1_000, SagaState.NEEDS_ATTENTION))
        await log.act(_action("t2", ActionKind.RESOLVE, Resolution.NOTHING_TO_MOVE))
        await log.create(_saga("t3"), SagaState.DEBITING)
        await log.commit(Change("t3", 1_000, SagaState.COMPENSATING))
        await log.act(_action("t3", ActionKind.RETRY))

    asyncio.run(scenario())
    samples = parse(generate_latest(metrics.registry).decode())
    assert label_values(samples, "saga_sagas", "state") == {state.value for state in SagaState}
    assert value(samples, "saga_sagas", state="CANCELLED") == 1
    assert value(samples, "saga_sagas", state="RESOLVED") == 1
    assert value(samples, "saga_sagas", state="COMPENSATING") == 1, "a retry changes no state"
    assert value(samples, "saga_transitions_total", from_state="PENDING", to_state="CANCELLED") == 1
    assert value(samples, "saga_transitions_total", from_state="NEEDS_ATTENTION", to_state="RESOLVED") == 1
    assert value(samples, "saga_transitions_total", to_state="COMPENSATING") == 1, "entered once, not by the retry"
    assert value(samples, "saga_compensations_total") == 1


def test_the_observed_log_forwards_every_read_and_keyword_of_the_log() -> None:
    memory = MemorySagaLog()
    observed: SagaLog = ObservedSagaLog(memory, SagaMetrics())
    retried: list[str] = []

    async def scenario() -> None:
        await observed.listen(lambda: None, retried.append)
        await observed.create(_saga("t1"), SagaState.DEBITING)
        await observed.commit(Change("t1", 1_000, SagaState.COMPENSATING))
        [claimed] = await observed.claim("w1", limit=1, lease_ms=1_000, now_ms=2_000)
        assert await observed.release("t1", claimed.epoch, not_before_ms=60_000)
        assert await observed.claim("w2", limit=1, lease_ms=1_000, now_ms=3_000) == [], "it waits until 60 s"
        [again] = await observed.claim("w2", limit=1, lease_ms=1_000, now_ms=3_000, include_waiting=True)
        assert again.epoch == claimed.epoch + 1
        await observed.act(_action("t1", ActionKind.RETRY))
        assert retried == ["t1"]
        overview = await observed.overview(now_ms=120_000, stuck_after_ms=60_000, limit=5)
        assert overview == await memory.overview(now_ms=120_000, stuck_after_ms=60_000, limit=5)
        assert overview.compensating_too_long == 1
        assert [saga.transaction_id for saga in await observed.by_account("bob", limit=5)] == ["t1"]
        assert await observed.by_account("bob", service="bank-z", limit=5) == []
        assert await observed.action_counts() == {"retry": 1}

    asyncio.run(scenario())
