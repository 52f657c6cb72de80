"""The alert metrics, read from the saga log at scrape time: each number, and a log that fails the read."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest

from saga.logs import MemorySagaLog, SagaLogError
from saga.logs.base import Overview
from saga.records import AccountRef, ActionKind, Change, OperatorAction, Resolution, SagaRecord
from saga.states import SagaState
from saga.telemetry.metrics import AlertMetrics, AlertSource, ObservedSagaLog, SagaMetrics
from tests.support.aio import run
from tests.support.inprocess import asgi_client
from tests.support.metrics import Samples, parse, value

T0 = 1_700_000_000_000
STUCK_AFTER_SECONDS = 60
ALERT_GAUGES = (
    "saga_compensating_stuck",
    "saga_needs_attention",
    "saga_needs_attention_oldest_age_seconds",
    "saga_deadlines_expired_open",
)


class Clock:
    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def record(transaction_id: str, at_ms: int, deadline_ms: int | None = None) -> SagaRecord:
    return SagaRecord(
        transaction_id,
        AccountRef("http://a", "alice", "bank-a"),
        AccountRef("http://b", "bob", "bank-b"),
        100,
        created_at_ms=at_ms,
        updated_at_ms=at_ms,
        deadline_ms=deadline_ms,
    )


async def in_state(log: MemorySagaLog, transaction_id: str, state: SagaState, at_ms: int) -> None:
    await log.create(record(transaction_id, at_ms), SagaState.DEBITING)
    await log.commit(Change(transaction_id, at_ms, state))


def action(transaction_id: str, kind: ActionKind, at_ms: int, resolution: Resolution | None = None) -> OperatorAction:
    return OperatorAction(transaction_id, kind, "op-ada", "checked both trails", at_ms, resolution)


def scrape(registry: CollectorRegistry) -> Samples:
    return parse(generate_latest(registry).decode())


def alerts_over(log: AlertSource, clock: Clock, registry: CollectorRegistry | None = None) -> tuple[AlertMetrics, Any]:
    registry = registry or CollectorRegistry(auto_describe=True)
    return AlertMetrics(log, registry, clock, STUCK_AFTER_SECONDS), registry


def test_a_compensation_counts_as_stuck_once_it_is_older_than_the_threshold() -> None:
    log, clock = MemorySagaLog(), Clock()
    alerts, registry = alerts_over(log, clock)
    run(in_state(log, "t1", SagaState.COMPENSATING, T0))
    clock.now_ms = T0 + STUCK_AFTER_SECONDS * 1000 - 1
    run(alerts.refresh())
    assert value(scrape(registry), "saga_compensating_stuck") == 0
    clock.now_ms = T0 + STUCK_AFTER_SECONDS * 1000
    run(alerts.refresh())
    samples = scrape(registry)
    assert value(samples, "saga_compensating_stuck") == 1
    assert value(samples, "saga_stuck_threshold_seconds") == STUCK_AFTER_SECONDS


def test_needs_attention_counts_and_the_oldest_age_from_its_creation() -> None:
    log, clock = MemorySagaLog(), Clock()
    alerts, registry = alerts_over(log, clock)
    run(in_state(log, "younger", SagaState.NEEDS_ATTENTION, T0 + 20_000))
    run(in_state(log, "older", SagaState.NEEDS_ATTENTION, T0 + 10_000))
    run(in_state(log, "done", SagaState.COMPLETED, T0))
    clock.now_ms = T0 + 70_000
    run(alerts.refresh())
    samples = scrape(registry)
    assert value(samples, "saga_needs_attention") == 2
    assert value(samples, "saga_needs_attention_oldest_age_seconds") == 60.0
    assert value(samples, "saga_compensating_stuck") == 0


def test_with_nothing_waiting_the_oldest_age_is_zero_and_every_action_kind_is_present() -> None:
    log, clock = MemorySagaLog(), Clock()
    alerts, registry = alerts_over(log, clock)
    run(alerts.refresh())
    samples = scrape(registry)
    for name in ALERT_GAUGES:
        assert (name, frozenset()) in samples, name
        assert samples[(name, frozenset())] == 0
    for kind in ("cancel", "retry", "resolve"):
        assert samples[("saga_operator_actions_total", frozenset({("action", kind)}))] == 0
    assert value(samples, "saga_alert_refresh_failures_total") == 0


def test_an_unfinished_saga_past_its_deadline_counts_until_it_ends() -> None:
    log, clock = MemorySagaLog(), Clock()
    alerts, registry = alerts_over(log, clock)
    run(log.submit(record("late", T0, deadline_ms=T0 + 30_000)))
    run(log.submit(record("early", T0, deadline_ms=T0 + 90_000)))
    run(in_state(log, "ended", SagaState.COMPLETED, T0))
    clock.now_ms = T0 + 29_999
    run(alerts.refresh())
    assert value(scrape(registry), "saga_deadlines_expired_open") == 0
    clock.now_ms = T0 + 30_000
    run(alerts.refresh())
    assert value(scrape(registry), "saga_deadlines_expired_open") == 1
    run(log.act(action("late", ActionKind.CANCEL, T0 + 31_000)))
    run(alerts.refresh())
    assert value(scrape(registry), "saga_deadlines_expired_open") == 0, "a cancelled saga has ended"


def test_operator_actions_are_counted_by_kind_from_the_log() -> None:
    log, clock = MemorySagaLog(), Clock(T0 + 1_000)
    alerts, registry = alerts_over(log, clock)
    run(log.submit(record("pending-1", T0)))
    run(log.submit(record("pending-2", T0)))
    run(in_state(log, "compensating", SagaState.COMPENSATING, T0))
    run(in_state(log, "forgotten", SagaState.NEEDS_ATTENTION, T0))
    run(log.act(action("pending-1", ActionKind.CANCEL, T0 + 1)))
    run(log.act(action("pending-2", ActionKind.CANCEL, T0 + 2)))
    run(log.act(action("compensating", ActionKind.RETRY, T0 + 3)))
    run(log.act(action("forgotten", ActionKind.RESOLVE, T0 + 4, Resolution.MOVED_BY_HAND)))
    run(alerts.refresh())
    samples = scrape(registry)
    assert value(samples, "saga_operator_actions_total", action="cancel") == 2
    assert value(samples, "saga_operator_actions_total", action="retry") == 1
    assert value(samples, "saga_operator_actions_total", action="resolve") == 1
    assert value(samples, "saga_needs_attention") == 0, "resolved: no longer waiting"
    assert value(samples, "saga_needs_attention_oldest_age_seconds") == 0


def test_every_replica_reads_the_same_numbers_from_one_log() -> None:
    log, clock = MemorySagaLog(), Clock(T0 + 120_000)
    run(in_state(log, "t1", SagaState.COMPENSATING, T0))
    run(in_state(log, "t2", SagaState.NEEDS_ATTENTION, T0))
    replicas = [alerts_over(ObservedSagaLog(log, SagaMetrics()), clock) for _ in range(2)]
    for alerts, _ in replicas:
        run(alerts.refresh())
    first, second = (scrape(registry) for _, registry in replicas)
    assert first == second
    assert value(first, "saga_compensating_stuck") == 1
    assert value(first, "saga_needs_attention_oldest_age_seconds") == 120.0


class FlakyLog:
    """A log whose reads fail, or hang, on demand."""

    def __init__(self, log: MemorySagaLog) -> None:
        self.log = log
        self.failing: str | None = None
        self.hang = False
        self.reads = 0

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        self.reads += 1
        if self.hang:
            await asyncio.sleep(10)
        if self.failing == "overview":
            raise SagaLogError("connection refused")
        return await self.log.overview(now_ms=now_ms, stuck_after_ms=stuck_after_ms, limit=limit)

    async def action_counts(self) -> dict[str, int]:
        if self.failing == "action_counts":
            raise OSError("connection reset")
        return await self.log.action_counts()


def test_a_failed_read_keeps_the_last_values_and_counts_the_failure() -> None:
    memory, clock = MemorySagaLog(), Clock(T0 + 120_000)
    log = FlakyLog(memory)
    alerts, registry = alerts_over(log, clock)
    run(in_state(memory, "t1", SagaState.NEEDS_ATTENTION, T0))
    run(in_state(memory, "t2", SagaState.COMPENSATING, T0))
    run(alerts.refresh())
    kept = scrape(registry)

    run(in_state(memory, "t3", SagaState.NEEDS_ATTENTION, T0))
    for failing in ("overview", "action_counts"):
        log.failing = failing
        clock.now_ms += 60_000
        run(alerts.refresh())
    samples = scrape(registry)
    assert value(samples, "saga_alert_refresh_failures_total") == 2
    for name in (*ALERT_GAUGES, "saga_operator_actions_total"):
        assert value(samples, name) == value(kept, name), name
    assert value(samples, "saga_needs_attention") == 1, "the reading before the failures"
    assert value(samples, "saga_needs_attention_oldest_age_seconds") == 120.0

    log.failing = None
    run(alerts.refresh())
    samples = scrape(registry)
    assert value(samples, "saga_needs_attention") == 2
    assert value(samples, "saga_needs_attention_oldest_age_seconds") == 240.0
    assert value(samples, "saga_alert_refresh_failures_total") == 2


def test_a_read_that_hangs_is_a_failure_after_the_timeout() -> None:
    log, clock = FlakyLog(MemorySagaLog()), Clock()
    registry = CollectorRegistry(auto_describe=True)
    alerts = AlertMetrics(log, registry, clock, STUCK_AFTER_SECONDS, timeout_seconds=0.05)
    log.hang = True
    run(alerts.refresh())
    assert value(scrape(registry), "saga_alert_refresh_failures_total") == 1


def test_before_any_read_succeeds_no_alert_number_is_made_up() -> None:
    log, clock = FlakyLog(MemorySagaLog()), Clock()
    alerts, registry = alerts_over(log, clock)
    assert log.reads == 0, "registering reads nothing"
    log.failing = "overview"
    run(alerts.refresh())
    samples = scrape(registry)
    names = {name for name, _ in samples}
    assert names == {"saga_stuck_threshold_seconds", "saga_alert_refresh_failures_total"}
    assert value(samples, "saga_alert_refresh_failures_total") == 1


def test_the_alert_metrics_share_a_registry_with_the_saga_metrics() -> None:
    metrics, clock = SagaMetrics(), Clock()
    alerts, registry = alerts_over(ObservedSagaLog(MemorySagaLog(), metrics), clock, metrics.registry)
    run(alerts.refresh())
    samples = scrape(registry)
    assert (("saga_needs_attention", frozenset())) in samples
    assert value(samples, "saga_sagas", state="NEEDS_ATTENTION") == 0


def test_a_metrics_route_that_refreshes_first_serves_the_logs_numbers_and_survives_a_failing_log() -> None:
    # The wiring the transfers service uses: await refresh(), then render the registry.
    memory, clock = MemorySagaLog(), Clock(T0 + 900_000)
    log = FlakyLog(memory)
    alerts, registry = alerts_over(log, clock)
    app = FastAPI()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        await alerts.refresh()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def scenario() -> None:
        await in_state(memory, "t1", SagaState.NEEDS_ATTENTION, T0)
        async with asgi_client(app) as client:
            answer = await client.get("/metrics")
            assert answer.status_code == 200
            assert value(parse(answer.text), "saga_needs_attention_oldest_age_seconds") == 900.0
            log.failing = "overview"
            answer = await client.get("/metrics")
            assert answer.status_code == 200
            samples = parse(answer.text)
            assert value(samples, "saga_needs_attention") == 1
            assert value(samples, "saga_alert_refresh_failures_total") == 1

    run(scenario())
