"""Prometheus metrics of one orchestrator process, and the endpoint that serves them.

Everything is read off the saga log's traffic: :class:`ObservedSagaLog` wraps
the log the orchestrator writes to, and every committed change (a new state,
the attempts since the last commit) is counted as it becomes durable. So the
numbers are those of what the log holds, and the orchestrator needs no hooks.
It also writes the one log line per state change (see saga/telemetry/logging_setup.py).

:class:`AlertMetrics` is the other kind: numbers read from the log itself at
scrape time (stuck compensations, sagas waiting for an operator, expired
deadlines, operator actions), the same in every process that shares the log,
and the same as the console's overview shows.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TextIO
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.logs import SagaLog
from saga.logs.base import Overview
from saga.records import ActionKind, Attempt, Change, Event, OperatorAction, SagaRecord
from saga.states import OPERATOR_STATES, SagaState

transitions_log = logging.getLogger("saga.transitions")
alerts_log = logging.getLogger("saga.telemetry.metrics")

_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Parts of one request's time: the client side of a request is a fraction of a millisecond on loopback.
_SPLIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_COMPENSATION_STEPS = frozenset({"compensate_debit", "compensate_credit"})


def step_outcome(attempt: Attempt) -> str:
    """``ok`` (200), ``rejected`` (a 4xx: final), or ``unknown`` (a 5xx, a timeout, no connection)."""
    if attempt.status == 200:
        return "ok"
    if attempt.status is not None and 400 <= attempt.status < 500:
        return "rejected"
    return "unknown"


class SagaMetrics:
    """The metrics of one orchestrator process: built per command, never shared between processes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.transitions = Counter(
            "saga_transitions",
            "State changes made durable in the saga log, by the state left and the state entered.",
            ["from_state", "to_state"],
            registry=self.registry,
        )
        self.steps = Counter(
            "saga_steps",
            "Requests sent by the sagas, by step, outcome (ok, rejected, unknown) and problem code.",
            ["step", "outcome", "code"],
            registry=self.registry,
        )
        self.retries = Counter(
            "saga_retries",
            "Requests beyond the first of a step (the same transaction_id sent again), by step.",
            ["step"],
            registry=self.registry,
        )
        self.compensations = Counter(
            "saga_compensations",
            "Sagas that entered COMPENSATING: something was taken that has to be given back or fenced.",
            registry=self.registry,
        )
        self.step_latency = Histogram(
            "saga_step_duration_seconds",
            "Time of one request of a step, from sending to its answer or its failure, by step.",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "saga_log_commit_duration_seconds",
            "Time from handing a change to the saga log until it is durable (group commit included).",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.attempt_split = Histogram(
            "saga_attempt_split_seconds",
            "Where one request's time went, by part: log_wait (the saga log's commit before it went out), "
            "server (the service's own Server-Timing total) and client (the rest of the request: the client "
            "stack and the network).",
            ["part"],
            buckets=_SPLIT_BUCKETS,
            registry=self.registry,
        )
        # A worker (several orchestrators sharing one log) claims sagas, renews
        # its claims and takes over those of a worker that died: see worker_claimed().
        self.claims = Counter("saga_claims", "Sagas this worker claimed.", registry=self.registry)
        self.renewals = Counter("saga_claim_renewals", "Claims this worker renewed.", registry=self.registry)
        self.takeovers = Counter(
            "saga_takeovers", "Sagas this worker took over from a worker whose claim expired.", registry=self.registry
        )
        self.sagas = SagaStates()
        self.registry.register(_StatesCollector(self.sagas))

    def worker_claimed(self) -> None:
        self.claims.inc()

    def worker_renewed(self) -> None:
        self.renewals.inc()

    def worker_took_over(self) -> None:
        self.takeovers.inc()

    def observe_log(self, log: object) -> None:
        """Export the group commit counters of ``log``, where it keeps them."""
        self.registry.register(_GroupCommitCollector(log))

    def attempts(self, attempts: Iterable[Attempt]) -> None:
        for attempt in attempts:
            self.steps.labels(attempt.step, step_outcome(attempt), attempt.code or "").inc()
            if attempt.number > 1:
                self.retries.labels(attempt.step).inc()
            self.step_latency.labels(attempt.step).observe(attempt.latency_us / 1_000_000)
            self._split(attempt)

    def _split(self, attempt: Attempt) -> None:
        parts = (("log_wait", attempt.log_wait_us), ("server", attempt.server_us), ("client", attempt.client_us))
        for part, microseconds in parts:
            if microseconds is not None:
                self.attempt_split.labels(part).observe(microseconds / 1_000_000)


@dataclass(slots=True)
class _Tracked:
    state: SagaState
    #: When the saga entered its state, in milliseconds since the epoch.
    since_ms: int


class SagaStates:
    """The state of every saga this process created, resumed or saw in the log, and since when.

    Read from the metrics endpoint's thread while the event loop writes it: a
    lock keeps each read whole.
    """

    def __init__(self) -> None:
        self._sagas: dict[str, _Tracked] = {}
        self._lock = threading.Lock()

    def seen(self, record: SagaRecord) -> None:
        with self._lock:
            self._sagas.setdefault(record.transaction_id, _Tracked(record.state, record.updated_at_ms))

    def enter(self, transaction_id: str, state: SagaState, at_ms: int) -> SagaState | None:
        """Record the new state; returns the state left (None for a saga not seen before)."""
        with self._lock:
            tracked = self._sagas.get(transaction_id)
            if tracked is None:
                self._sagas[transaction_id] = _Tracked(state, at_ms)
                return None
            left, tracked.state, tracked.since_ms = tracked.state, state, at_ms
            return left

    def counts(self) -> dict[SagaState, int]:
        with self._lock:
            counts = dict.fromkeys(SagaState, 0)
            for tracked in self._sagas.values():
                counts[tracked.state] += 1
            return counts

    def oldest_since_ms(self, state: SagaState) -> int | None:
        with self._lock:
            return min((t.since_ms for t in self._sagas.values() if t.state is state), default=None)


class _StatesCollector(Collector):
    def __init__(self, sagas: SagaStates) -> None:
        self.sagas = sagas

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            "saga_sagas", "Sagas this process created, resumed or found unfinished, by current state.", labels=["state"]
        )
        for state, count in self.sagas.counts().items():
            by_state.add_metric([state.value], count)
        yield by_state
        oldest = self.sagas.oldest_since_ms(SagaState.COMPENSATING)
        age = GaugeMetricFamily(
            "saga_compensating_oldest_age_seconds",
            "How long the saga longest in COMPENSATING has been there (0 when none is).",
        )
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000))
        yield age


class _GroupCommitCollector(Collector):
    """The log's own counters: commits, and changes made durable by them (their ratio is the group size)."""

    def __init__(self, log: object) -> None:
        self.log = log

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, changes = getattr(self.log, "commits", None), getattr(self.log, "changes_committed", None)
        if isinstance(commits, int):
            yield CounterMetricFamily(
                "saga_log_commits", "Transactions the saga log committed (one fsync each).", value=commits
            )
        if isinstance(changes, int):
            yield CounterMetricFamily(
                "saga_log_changes_committed",
                "Changes made durable; divided by saga_log_commits, the mean group size of group commit.",
                value=changes,
            )


class AlertSource(Protocol):
    """What the alert metrics read of a saga log: any :class:`SagaLog` is one."""

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview: ...

    async def action_counts(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class _AlertReading:
    """What one refresh read from the log, kept whole until the next one succeeds."""

    compensating_stuck: int
    needs_attention: int
    oldest_needs_attention_age_seconds: float
    deadlines_expired_open: int
    #: Operator actions by kind: every ActionKind, and whatever other kind the log holds.
    actions: Mapping[str, int]


class AlertMetrics(Collector):
    """The numbers alerts are written on, read from the saga log at scrape time: the same in every replica.

    ``collect()`` is synchronous and log reads are not, so the ``/metrics``
    route awaits :meth:`refresh` (one :meth:`SagaLog.overview` and one
    :meth:`SagaLog.action_counts`) before it renders the registry. Being read
    from the log, the numbers are cluster-wide: aggregate replicas with
    ``max``, never ``sum``. Exported:

    - ``saga_compensating_stuck``: sagas COMPENSATING for longer than the
      threshold (counted from their creation, as the console's overview does);
    - ``saga_needs_attention``: sagas waiting in NEEDS_ATTENTION for an operator;
    - ``saga_needs_attention_oldest_age_seconds``: the age (since creation) of
      the oldest of them, 0 when there is none;
    - ``saga_deadlines_expired_open``: unfinished sagas past their deadline;
    - ``saga_operator_actions_total{action}``: operator actions the log holds,
      by kind (cancel, retry, resolve: each always present);
    - ``saga_stuck_threshold_seconds``: the threshold of ``saga_compensating_stuck``;
    - ``saga_alert_refresh_failures_total``: refreshes whose log read failed
      or took longer than ``timeout_seconds``, in this process.

    A failed refresh keeps the values of the last one that succeeded (and the
    route still answers); until one has succeeded, only the last two are
    exported, so that no alert reads a made-up zero.
    """

    def __init__(
        self,
        log: AlertSource,
        registry: CollectorRegistry,
        now_ms: Callable[[], int],
        stuck_after_seconds: float,
        *,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.log = log
        self.now_ms = now_ms
        self.stuck_after_seconds = stuck_after_seconds
        self.timeout_seconds = timeout_seconds
        self.failures = 0
        self._reading: _AlertReading | None = None
        registry.register(self)

    async def refresh(self) -> None:
        """Read the log anew; on any failure keep the last reading, count the failure, and log one line."""
        now = self.now_ms()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                overview = await self.log.overview(
                    now_ms=now, stuck_after_ms=round(self.stuck_after_seconds * 1000), limit=1
                )
                actions = await self.log.action_counts()
        except Exception as error:
            self.failures += 1
            reason = "timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"
            alerts_log.warning("alert metrics kept from the last read: the saga log read failed: %s", reason)
            return
        self._reading = _reading_of(overview, actions, now)

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Registration takes the names from here, so that it never reads the log nor calls collect().
        return self._families(None, describing=True)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return self._families(self._reading, describing=False)

    def _families(
        self, reading: _AlertReading | None, *, describing: bool
    ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if reading is not None or describing:
            for name, documentation, number in _ALERT_GAUGES:
                # Described without a sample; collected with the last reading's value.
                yield GaugeMetricFamily(name, documentation, value=None if reading is None else number(reading))
            actions = CounterMetricFamily(
                "saga_operator_actions",
                "Operator actions recorded in the saga log, by kind (cancel, retry, resolve).",
                labels=["action"],
            )
            for kind, count in (reading.actions if reading is not None else {}).items():
                actions.add_metric([kind], count)
            yield actions
        yield GaugeMetricFamily(
            "saga_stuck_threshold_seconds",
            "How long a saga may stay COMPENSATING before saga_compensating_stuck counts it.",
            value=self.stuck_after_seconds,
        )
        yield CounterMetricFamily(
            "saga_alert_refresh_failures",
            "Scrapes of this process whose read of the saga log failed; the alert metrics kept their last values.",
            value=self.failures,
        )


_ALERT_GAUGES: tuple[tuple[str, str, Callable[[_AlertReading], float]], ...] = (
    (
        "saga_compensating_stuck",
        "Sagas COMPENSATING for longer than saga_stuck_threshold_seconds since their creation, in the whole saga log.",
        lambda reading: reading.compensating_stuck,
    ),
    (
        "saga_needs_attention",
        "Sagas waiting in NEEDS_ATTENTION for an operator to resolve them, in the whole saga log.",
        lambda reading: reading.needs_attention,
    ),
    (
        "saga_needs_attention_oldest_age_seconds",
        "Age (since its creation) of the oldest saga in NEEDS_ATTENTION; 0 when none is.",
        lambda reading: reading.oldest_needs_attention_age_seconds,
    ),
    (
        "saga_deadlines_expired_open",
        "Unfinished sagas past their deadline, in the whole saga log.",
        lambda reading: reading.deadlines_expired_open,
    ),
)


def _reading_of(overview: Overview, actions: Mapping[str, int], now_ms: int) -> _AlertReading:
    oldest = overview.oldest_needs_attention_ms
    age = 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)
    counts = {kind.value: 0 for kind in ActionKind} | dict(actions)
    return _AlertReading(
        overview.compensating_too_long, overview.needs_attention, age, overview.deadlines_expired, counts
    )


class ObservedSagaLog:
    """A saga log that counts what is committed to it, and logs one line per state change."""

    def __init__(self, log: SagaLog, metrics: SagaMetrics, worker_id: str | None = None) -> None:
        self.log = log
        self.metrics = metrics
        self.worker_id = worker_id
        metrics.observe_log(log)

    async def create(self, saga: SagaRecord, first_state: SagaState) -> None:
        started = time.perf_counter()
        await self.log.create(saga, first_state)
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        self._entered(saga.transaction_id, saga.state, saga.created_at_ms, None)
        self._entered(saga.transaction_id, first_state, saga.created_at_ms, None)

    @property
    def exclusive(self) -> bool:
        return self.log.exclusive

    async def commit(self, change: Change) -> None:
        await self.commit_all((change,))

    async def commit_all(self, changes: Sequence[Change]) -> None:
        started = time.perf_counter()
        await self.log.commit_all(changes)
        self.metrics.commit_latency.observe(time.perf_counter() - started)
        for change in changes:
            self.metrics.attempts(change.attempts)
            if change.state is not None:
                self._entered(change.transaction_id, change.state, change.at_ms, change.error)

    def _entered(self, transaction_id: str, state: SagaState, at_ms: int, because: str | None) -> None:
        left = self.metrics.sagas.enter(transaction_id, state, at_ms)
        if left is not None:
            self.metrics.transitions.labels(left.value, state.value).inc()
        if state is SagaState.COMPENSATING and left is not SagaState.COMPENSATING:
            self.metrics.compensations.inc()
        fields = {
            "transaction_id": transaction_id,
            "event": "state",
            "from_state": None if left is None else left.value,
            "state": state.value,
            "because": because,
        }
        if self.worker_id is not None:
            fields["worker_id"] = self.worker_id
        transitions_log.info("saga %s -> %s", transaction_id, state.value, extra={"fields": fields})

    async def submit(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        recorded, created = await self.log.submit(saga)
        if created:
            self._entered(saga.transaction_id, SagaState.PENDING, saga.created_at_ms, None)
        return recorded, created

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease_ms: int,
        now_ms: int,
        transaction_id: str | None = None,
        include_waiting: bool = False,
    ) -> list[SagaRecord]:
        claimed = await self.log.claim(
            owner,
            limit=limit,
            lease_ms=lease_ms,
            now_ms=now_ms,
            transaction_id=transaction_id,
            include_waiting=include_waiting,
        )
        for record in claimed:
            self.metrics.sagas.seen(record)
            self.metrics.worker_claimed()
            # Epoch 1 is the first claim of a saga; a higher one means another
            # orchestrator held it before and its lease ran out, or it handed it back.
            if record.epoch > 1:
                self.metrics.worker_took_over()
        return claimed

    async def renew(self, owner: str, held: Mapping[str, int], *, lease_ms: int, now_ms: int) -> set[str]:
        lost = await self.log.renew(owner, held, lease_ms=lease_ms, now_ms=now_ms)
        for _ in range(len(held) - len(lost)):
            self.metrics.worker_renewed()
        return lost

    async def release(self, transaction_id: str, epoch: int, *, not_before_ms: int = 0) -> bool:
        return await self.log.release(transaction_id, epoch, not_before_ms=not_before_ms)

    async def listen(self, wake: Callable[[], None], retry: Callable[[str], None] | None = None) -> None:
        await self.log.listen(wake, retry)

    async def act(self, action: OperatorAction) -> SagaRecord:
        """Forwarded; an action that ends the saga (CANCELLED, RESOLVED) is counted and logged as any state change."""
        record = await self.log.act(action)
        # Only a cancel or a resolve lands here, and only from a state outside it: a retry changes no state.
        if record.state in OPERATOR_STATES:
            self._entered(record.transaction_id, record.state, record.updated_at_ms, record.last_error)
        return record

    async def overview(self, *, now_ms: int, stuck_after_ms: int, limit: int) -> Overview:
        return await self.log.overview(now_ms=now_ms, stuck_after_ms=stuck_after_ms, limit=limit)

    async def by_account(self, user_id: str, *, service: str | None = None, limit: int) -> list[SagaRecord]:
        return await self.log.by_account(user_id, service=service, limit=limit)

    async def action_counts(self) -> dict[str, int]:
        return await self.log.action_counts()

    async def get(self, transaction_id: str) -> SagaRecord | None:
        return await self.log.get(transaction_id)

    async def sagas(self, state: SagaState | None = None) -> list[SagaRecord]:
        return await self.log.sagas(state)

    async def unfinished(self) -> list[SagaRecord]:
        records = await self.log.unfinished()
        for record in records:
            self.metrics.sagas.seen(record)
        return records

    async def history(self, transaction_id: str) -> list[Event]:
        return await self.log.history(transaction_id)

    async def page(
        self, *, state: SagaState | None = None, limit: int, after: tuple[int, str] | None = None
    ) -> list[SagaRecord]:
        return await self.log.page(state=state, limit=limit, after=after)

    async def states(self, transaction_ids: Sequence[str]) -> dict[str, SagaState]:
        return await self.log.states(transaction_ids)

    async def raise_ledger_marks(self, marks: Sequence[LedgerMark]) -> None:
        await self.log.raise_ledger_marks(marks)

    async def ledger_marks(self) -> dict[str, LedgerMark]:
        return await self.log.ledger_marks()

    async def quarantine(self, quarantine: Quarantine) -> bool:
        return await self.log.quarantine(quarantine)

    async def quarantines(self) -> list[Quarantine]:
        return await self.log.quarantines()

    async def accept(self, service: str, reason: str, at_ms: int) -> Acceptance | None:
        return await self.log.accept(service, reason, at_ms)

    async def acceptances(self) -> list[Acceptance]:
        return await self.log.acceptances()

    async def close(self) -> None:
        await self.log.close()


class MetricsEndpoint:
    """``/metrics`` of one orchestrator process, on its own thread; stopped after an optional linger."""

    def __init__(self, metrics: SagaMetrics, host: str, port: int, linger: float = 0.0) -> None:
        self.metrics = metrics
        self.linger = linger
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.url = f"http://{host}:{self._server.server_port}/metrics"

    def stop(self, out: TextIO | None = None) -> None:
        """Keep serving for ``linger`` seconds (the last scrape of a short run), then stop."""
        if self.linger > 0:
            for stream in (out, sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            time.sleep(self.linger)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class MetricsEndpointError(Exception):
    """The metrics endpoint cannot listen where it was asked to: bad input, one line."""


def observed(log: SagaLog, args: argparse.Namespace, worker_id: str | None = None) -> ObservedSagaLog:
    """``log`` as the orchestrator of this command should write to it: counted, and a line per state change."""
    metrics: SagaMetrics | None = getattr(args, "saga_metrics", None)
    return ObservedSagaLog(log, metrics or SagaMetrics(), worker_id)


@contextmanager
def serving_metrics(args: argparse.Namespace, out: TextIO, err: TextIO) -> Iterator[SagaMetrics]:
    """The command's metrics (``args.saga_metrics``), served while it runs if it was given ``--metrics-port``.

    After the work ends normally the endpoint lingers ``--metrics-linger``
    seconds; after an error it stops at once. For any command with
    :func:`saga.cli.options.add_metrics_options`, the ``worker`` included.
    """
    metrics = SagaMetrics()
    args.saga_metrics = metrics
    port: int | None = getattr(args, "metrics_port", None)
    if port is None:
        yield metrics
        return
    host = args.metrics_host
    try:
        endpoint = MetricsEndpoint(metrics, host, port, float(args.metrics_linger))
    except OSError as error:
        raise MetricsEndpointError(f"cannot serve metrics on {host}:{port}: {error.strerror or error}") from None
    print(f"metrics at {endpoint.url}", file=err, flush=True)
    try:
        yield metrics
    except BaseException:
        endpoint.linger = 0
        raise
    finally:
        endpoint.stop(out)
