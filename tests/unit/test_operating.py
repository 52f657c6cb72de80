"""Console progress off a terminal, and the saga metrics read off the log's traffic."""

from __future__ import annotations

import asyncio
import io

from prometheus_client import generate_latest

from saga.console import PlainProgress
from saga.log import MemorySagaLog
from saga.metrics import ObservedSagaLog, SagaMetrics
from saga.records import AccountRef, Attempt, Change, SagaRecord
from saga.states import SagaState
from tests.support.metrics import parse, value


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
