"""One simulated run: the real saga against real accounts services, on a virtual clock, under a seeded fault plan.

A run draws its accounts and transfers from the seed, starts one accounts
service app per simulated URL, and has several orchestrator processes
(``orchestrators``, each a real :class:`~saga.Orchestrator` with a clock
that drifts from the others by a bounded amount) push the transfers through
one shared :class:`~saga.MemorySagaLog`, which leases each saga to one of
them as the PostgreSQL log does. The network between them is a
:class:`~saga.simulation.network.SimulatedNetwork`. When the fault plan
says so, one orchestrator crashes (every saga task of it is cancelled
wherever it is, and it starts again under a new name) or pauses past its
lease (everything it does waits, then carries on as if nothing happened).
Every orchestrator claims, each poll, the sagas whose leases ran out, so a
dead or paused one's sagas are taken over, one epoch up. When the plan crashes an accounts service
instead, the service comes back after its downtime as a new app over the
same store, which reads its ledger back from its record: the store stands
for a database that outlived the service's process. Once every saga is
terminal, and again once every late duplicate has landed, the run checks its
invariants.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

from saga import verify
from saga.ledgers import Acceptance, LedgerMark, Quarantine
from saga.logs import MemorySagaLog, SagaLog
from saga.logs.base import copy_record
from saga.operator import ActionRefused
from saga.orchestrator import Orchestrator
from saga.records import ActionKind, Change, Event, OperatorAction, SagaRecord
from saga.retry import RetryPolicies
from saga.simulation.clock import run_in_virtual_time
from saga.simulation.faults import CRASH, LOG_ROLLBACK, PAUSE, FaultRates, MillisecondRange, TraceEvent
from saga.simulation.invariants import check_deadlines, check_epochs, check_operator_ends, check_run
from saga.simulation.network import SENT_AT_MS, SERVICE_TOKEN, SimulatedNetwork
from saga.simulation.workload import PlannedTransfer, WorkloadShape, draw_workload, seeded_ids, service_url
from saga.states import SagaState
from saga.workflow import DEADLINE_EXCEEDED
from server import Settings, create_app
from server.ledger import Ledger
from server.stores.memory import MemoryStore

#: Virtual wall-clock time at the start of every run, so that timestamps in
#: the saga log look like real ones and are the same in every run.
EPOCH_MS = 1_700_000_000_000

#: Copies of the saga log kept for a rollback to choose from: one per poll.
BACKUPS_KEPT = 5

#: States a saga can be restored into and then resumed forward.
_FORWARD = frozenset({SagaState.PENDING, SagaState.DEBITING, SagaState.CREDITING})

#: Recoveries after the last transfer before a saga that is still not
#: terminal counts as stuck.
FINAL_RECOVERY_ROUNDS = 5


@dataclass(frozen=True)
class SimulationConfig:
    seed: int
    transfers: int
    services: int = 2
    concurrency: int = 16
    rates: FaultRates = field(default_factory=FaultRates)
    shape: WorkloadShape = field(default_factory=WorkloadShape)
    policies: RetryPolicies = field(default_factory=RetryPolicies)
    #: Orchestrator processes sharing the log, their leases, how often each
    #: claims what has expired, and how far apart their clocks may be.
    orchestrators: int = 3
    #: One orchestrator on a log that only it may drive, as with SQLite: its
    #: sagas skip the commits no request depends on (see saga/run.py).
    exclusive_log: bool = False
    lease_seconds: float = 10.0
    poll_seconds: float = 1.0
    max_clock_drift_ms: int = 1_000
    #: A run whose sagas are still going after this much virtual time is
    #: stuck (a compensation retrying forever, say): it stops and says so.
    virtual_time_limit: float = 3_600.0

    def __post_init__(self) -> None:
        if self.transfers < 0:
            raise ValueError("transfers must not be negative")
        if self.services < 1:
            raise ValueError("a simulation needs at least one service")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.orchestrators < 1:
            raise ValueError("a simulation needs at least one orchestrator")
        if self.exclusive_log and self.orchestrators != 1:
            raise ValueError("an exclusive log has exactly one orchestrator")
        if not 0 <= self.max_clock_drift_ms * 2 < self.lease_seconds * 1000:
            raise ValueError("clocks may drift apart by less than a lease, or leases mean nothing")

    def command(self) -> str:
        """The one command that reruns exactly this run."""
        return (
            f".venv/bin/python -m saga.simulation --seed {self.seed} --transfers {self.transfers} "
            f"--services {self.services} --concurrency {self.concurrency}"
            + (" --exclusive-log" if self.exclusive_log else "")
        )


@dataclass
class SimulationResult:
    config: SimulationConfig
    #: Every saga in the log at the end, in the order they were created.
    sagas: list[SagaRecord]
    fault_counts: dict[str, int]
    violations: list[verify.Violation]
    trace: list[TraceEvent]
    #: Planned transfers a crash cut off before the orchestrator logged them.
    abandoned: int
    requests: int
    virtual_seconds: float
    wall_seconds: float
    #: What the operators did: ``cancel`` and ``retry`` landed, ``cancel_refused`` and ``retry_refused`` not.
    operator_actions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def states(self) -> Counter[SagaState]:
        return Counter(saga.state for saga in self.sagas)

    @property
    def deadlines(self) -> int:
        """Sagas that had a deadline."""
        return sum(1 for saga in self.sagas if saga.deadline_ms is not None)

    @property
    def deadlines_expired(self) -> int:
        """Sagas whose deadline cut them short: they ended with code ``deadline_exceeded``."""
        return sum(1 for saga in self.sagas if saga.code == DEADLINE_EXCEEDED)

    @property
    def trace_digest(self) -> str:
        """A fingerprint of the whole trace: equal digests, equal runs."""
        digest = hashlib.sha256()
        for event in self.trace:
            digest.update(repr(event).encode())
            digest.update(b"\n")
        return digest.hexdigest()[:16]

    def trace_of(self, transaction_id: str) -> list[TraceEvent]:
        return [event for event in self.trace if event.transaction_id == transaction_id]


def simulate(
    seed: int,
    transfers: int,
    services: int = 2,
    concurrency: int = 16,
    *,
    rates: FaultRates | None = None,
    shape: WorkloadShape | None = None,
) -> SimulationResult:
    """Run one seeded simulation to the end and judge it."""
    config = SimulationConfig(
        seed, transfers, services, concurrency, rates=rates or FaultRates(), shape=shape or WorkloadShape()
    )
    return run_simulation(config)


def run_simulation(config: SimulationConfig) -> SimulationResult:
    started = time.perf_counter()
    result = run_in_virtual_time(_Run(config).run())
    result.wall_seconds = time.perf_counter() - started
    return result


def _moved_on_since(backup: _LogCopy, now: dict[str, SagaRecord]) -> bool:
    """Whether a saga that ``backup`` holds in a forward state has since been compensated, or ended."""
    return any(
        saga.state in _FORWARD and tid in now and now[tid].state is not saga.state for tid, saga in backup.sagas.items()
    )


def _forgets_a_claim(backup: _LogCopy, now: dict[str, SagaRecord]) -> bool:
    """Whether ``backup`` holds a saga no run had claimed yet (epoch 0) that one has claimed since.

    Restored, such a saga looks as if no run ever drove it, and everything
    that rests on the epoch then trusts what it must not: an operator's
    cancel lands although a debit may be out, and the next run takes itself
    for the first (it trusts a refusal its service did not record). The saga
    cannot tell; a restore of such a copy is left out of the fault plan.
    """
    return any(saga.epoch == 0 and tid in now and now[tid].epoch > 0 for tid, saga in backup.sagas.items())


def _rng(config: SimulationConfig, purpose: str) -> random.Random:
    """An independent stream per purpose, so that changing how one part draws leaves the others alone."""
    # A string seed is hashed with SHA-512, not with the per-process hash(): the same in every process.
    return random.Random(f"{config.seed}/{purpose}")


class _SimulatedLog(MemorySagaLog):
    """A memory log whose commits take time, like fsyncs.

    A commit becomes durable partway through its wait: a crash before that
    point loses the change, a crash after it keeps the change although the
    saga never learned so. Either way the saga must not have acted on it.
    """

    def __init__(self, rng: random.Random, commit_ms: MillisecondRange, *, exclusive: bool) -> None:
        super().__init__(exclusive=exclusive)
        self._rng = rng
        self._commit_ms = commit_ms

    async def commit(self, change: Change) -> None:
        await self.commit_all((change,))

    def copy_at(self, at_ms: int) -> _LogCopy:
        """A consistent copy of everything in the log, as a backup taken at ``at_ms`` holds it."""
        return _LogCopy(
            {tid: copy_record(saga) for tid, saga in self._sagas.items()},
            {tid: list(events) for tid, events in self._history.items()},
            dict(self._by_key),
            dict(self._marks),
            dict(self._quarantines),
            list(self._acceptances),
            at_ms,
        )

    def restore(self, backup: _LogCopy) -> None:
        """Put the log back as it was when ``backup`` was taken: everything since is gone."""
        self._sagas = {tid: copy_record(saga) for tid, saga in backup.sagas.items()}
        self._history = {tid: list(events) for tid, events in backup.history.items()}
        self._by_key = dict(backup.by_key)
        self._marks = dict(backup.marks)
        self._quarantines = dict(backup.quarantines)
        self._acceptances = list(backup.acceptances)

    async def commit_all(self, changes: Sequence[Change]) -> None:
        total_ms = self._rng.randint(self._commit_ms.low, self._commit_ms.high)
        durable_after_ms = self._rng.randint(0, total_ms)
        await asyncio.sleep(durable_after_ms / 1000)
        for change in changes:
            await super().commit(change)
        await asyncio.sleep((total_ms - durable_after_ms) / 1000)


@dataclass(frozen=True)
class _LogCopy:
    sagas: dict[str, SagaRecord]
    history: dict[str, list[Event]]
    by_key: dict[str, str]
    marks: dict[str, LedgerMark]
    quarantines: dict[str, Quarantine]
    acceptances: list[Acceptance]
    at_ms: int = 0


class _Paused:
    """What one orchestrator process can do: nothing at all while it is paused."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.running.set()

    async def wait(self) -> None:
        await self.running.wait()


class _PausableLog:
    """The shared log as one orchestrator process reaches it: every call and every answer waits out a pause."""

    def __init__(self, log: SagaLog, paused: _Paused) -> None:
        self._log = log
        self._paused = paused
        self.exclusive = log.exclusive

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._log, name)

        async def call(*arguments: Any, **options: Any) -> Any:
            await self._paused.wait()
            result = await method(*arguments, **options)
            await self._paused.wait()
            return result

        return call


class _PausableTransport(httpx.AsyncBaseTransport):
    """The network as one orchestrator process reaches it: nothing leaves or arrives while it is paused.

    Each request is stamped with the process's clock as it leaves the saga
    (:data:`~saga.simulation.network.SENT_AT_MS`): the deadline it was sent
    under is the one the network's record is judged against.
    """

    def __init__(self, network: SimulatedNetwork, paused: _Paused, now_ms: Callable[[], int]) -> None:
        self._network = network
        self._paused = paused
        self._now_ms = now_ms

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions[SENT_AT_MS] = self._now_ms()
        await self._paused.wait()
        response = await self._network.handle_async_request(request)
        await self._paused.wait()
        return response


@dataclass
class _Process:
    """One orchestrator process: its incarnation, its clock's drift, its tasks and whether it is paused."""

    index: int
    drift_ms: int
    incarnation: int = 0
    paused: _Paused = field(default_factory=_Paused)
    crashed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class _Run:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        rates = config.rates
        self.workload = draw_workload(
            _rng(config, "workload"),
            config.services,
            config.transfers,
            config.shape,
            handling=_rng(config, "deadlines and submissions"),
        )
        #: Each service's store: it outlives the service's crashes, as a database would.
        self.stores = {host: MemoryStore.create(accounts) for host, accounts in self.workload.balances.items()}
        self.restarts: Counter[str] = Counter()
        apps = {host: self._start_service(host) for host in self.stores}
        self.trace: list[TraceEvent] = []
        self.network = SimulatedNetwork(apps, rates, _rng(config, "network"), self.trace)
        self.network.on_delivered = self._watch_balances
        self.network.on_restart = self._restart_service
        self.overdrawn: dict[tuple[str, str], verify.Violation] = {}
        self.log = _SimulatedLog(_rng(config, "log"), rates.log_commit_ms, exclusive=config.exclusive_log)
        self.new_id = seeded_ids(_rng(config, "ids"))
        self._faults = _rng(config, "orchestrator faults")
        self._rollbacks_rng = _rng(config, "log rollbacks")
        self.crashes = 0
        self.pauses = 0
        self.rollbacks = 0
        #: Sagas a log rollback erased: each had ended before the restore, and still counts.
        self.forgotten: list[SagaRecord] = []
        #: The log's copies of the last few polls, oldest first, for a rollback to restore.
        self.backups: deque[_LogCopy] = deque(maxlen=BACKUPS_KEPT)
        #: Cleared while the log is being restored: no transfer starts, no orchestrator comes back.
        self.log_open = asyncio.Event()
        self.log_open.set()
        #: Orchestrator processes stopped for a restore; all_down is set once all are.
        self.down = 0
        self.all_down = asyncio.Event()
        #: Transfers taken from the queue whose orchestrator.transfer() has not returned.
        self.in_flight = 0
        self.errors: list[verify.Violation] = []
        self._operators_rng = _rng(config, "operators")
        self.operator_actions: Counter[str] = Counter()
        #: The histories of sagas a log rollback erased, as they were before it.
        self.forgotten_histories: dict[str, list[Event]] = {}

    @property
    def ledgers(self) -> dict[str, Ledger]:
        """Each service's ledger as its store holds it now: a restart reads it back anew."""
        return {host: store.ledger for host, store in self.stores.items()}

    def _start_service(self, host: str) -> ASGIApp:
        """A new accounts service app over the host's store, with fault draws of its own."""
        restarts = self.restarts[host]
        rates = self.config.rates
        settings = Settings(
            accounts=dict(self.workload.balances[host]),
            credit_fault_rate=rates.credit_fault_rate,
            credit_fault_after_commit_rate=rates.credit_fault_after_commit_rate,
            token=SERVICE_TOKEN,
            fault_seed=_rng(self.config, f"server/{host}" + (f"/restart {restarts}" if restarts else "")).getrandbits(
                64
            ),
        )
        return create_app(settings, self.stores[host])

    def _restart_service(self, host: str) -> ASGIApp:
        """The crashed service's process starts again: the store reads its ledger back, the app is new."""
        self.stores[host].reload()
        self.restarts[host] += 1
        return self._start_service(host)

    def _orchestrator(self, process: _Process) -> Orchestrator:
        loop = asyncio.get_running_loop()
        drift_ms = process.drift_ms
        name = f"orchestrator-{process.index}.{process.incarnation}"

        def now_ms() -> int:
            return EPOCH_MS + round(loop.time() * 1000) + drift_ms

        return Orchestrator(
            _PausableLog(self.log, process.paused),
            policies=self.config.policies,
            # Room for the sagas it takes over on top of its own new ones: a
            # new transfer queued behind takeovers is lost unlogged if the
            # orchestrator crashes, which would only thin the run out.
            concurrency=2 * self.config.concurrency,
            transport=_PausableTransport(self.network, process.paused, now_ms),
            new_id=self.new_id,
            rng=_rng(self.config, f"orchestrator/{name}"),
            now_ms=now_ms,
            owner=name,
            lease_seconds=self.config.lease_seconds,
            token=SERVICE_TOKEN,
        )

    async def run(self) -> SimulationResult:
        opening = {service_url(host): dict(accounts) for host, accounts in self.workload.balances.items()}
        queue = deque(self.workload.transfers)
        await self._drive(queue)
        records = await self.log.sagas() + self.forgotten
        histories = {record.transaction_id: await self.log.history(record.transaction_id) for record in records}
        histories.update(self.forgotten_histories)
        violations = (
            self.errors
            + list(self.overdrawn.values())
            + check_run(opening, self.ledgers, records)
            + check_epochs(histories)
            + check_deadlines(records, histories, self.network.sent, self.config.policies)
            + check_operator_ends(records, histories, self.network.sent)
        )
        await self.network.drain()
        # Late duplicates may land long after every saga ended: they must change nothing.
        records = await self.log.sagas() + self.forgotten
        landed = check_run(opening, self.ledgers, records)
        seen = {(violation.invariant, violation.detail) for violation in violations}
        violations += [
            verify.Violation(
                f"{violation.invariant} (after late duplicates landed)", violation.detail, violation.transaction_ids
            )
            for violation in landed
            if (violation.invariant, violation.detail) not in seen
        ]
        counts = dict(self.network.counts)
        counts[CRASH] = self.crashes
        counts[PAUSE] = self.pauses
        counts[LOG_ROLLBACK] = self.rollbacks
        return SimulationResult(
            config=self.config,
            sagas=records,
            fault_counts=counts,
            violations=violations,
            trace=self.trace,
            abandoned=len(self.workload.transfers) - len(records),
            requests=self.network.requests,
            virtual_seconds=asyncio.get_running_loop().time(),
            wall_seconds=0.0,
            operator_actions=dict(sorted(self.operator_actions.items())),
        )

    async def _drive(self, queue: deque[PlannedTransfer]) -> None:
        """Run every transfer on the orchestrators; end when every saga is terminal, or out of time."""
        loop = asyncio.get_running_loop()
        drifts = _rng(self.config, "clocks")
        limit = self.config.max_clock_drift_ms
        processes = [_Process(index, drifts.randint(-limit, limit)) for index in range(self.config.orchestrators)]
        self.network.on_crash = lambda: self._crash_or_pause(processes)
        stop = asyncio.Event()
        lives = [asyncio.create_task(self._live(process, queue, stop)) for process in processes]
        operators = asyncio.create_task(self._operators())
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            if not queue and not self.in_flight and not await self.log.unfinished():
                break
            await self._maybe_roll_the_log_back(processes)
            if loop.time() >= self.config.virtual_time_limit:
                self.errors.append(
                    verify.Violation(
                        "the run finishes",
                        f"sagas still running after {self.config.virtual_time_limit:g} virtual seconds",
                    )
                )
                break
        self.network.on_crash = None
        operators.cancel()
        await asyncio.gather(operators, return_exceptions=True)
        stop.set()
        for process in processes:
            process.crashed.set()
            process.paused.running.set()
        await asyncio.gather(*lives)

    async def _live(self, process: _Process, queue: deque[PlannedTransfer], stop: asyncio.Event) -> None:
        """One orchestrator process, incarnation after incarnation, until the run stops."""
        share = max(1, self.config.concurrency // self.config.orchestrators)
        while True:
            orchestrator = self._orchestrator(process)
            # An operator's retry cuts the backoff of the saga's run short, wherever it runs.
            await self.log.listen(_ignore, retry=orchestrator.retry_now)
            process.crashed = asyncio.Event()
            process.tasks = {asyncio.create_task(self._transfers(orchestrator, queue)) for _ in range(share)}
            claims = asyncio.create_task(self._claims(orchestrator, process))
            await process.crashed.wait()
            # The process dies: every saga of it stops wherever it is, and its leases run out.
            claims.cancel()
            tasks = list(process.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(claims, *tasks, return_exceptions=True)
            await orchestrator.aclose()
            if stop.is_set():
                return
            if not self.log_open.is_set():
                self.down += 1
                if self.down == self.config.orchestrators:
                    self.all_down.set()
                await self.log_open.wait()
                self.down -= 1
            self.crashes += 1
            self.network.record("crash", f"orchestrator-{process.index}: {len(tasks)} tasks cancelled")
            process.incarnation += 1

    async def _maybe_roll_the_log_back(self, processes: list[_Process]) -> None:
        """Now and then, restore the saga log from a copy taken a few polls ago, as an operator restores a backup.

        The copy chosen holds a saga in a forward state that has moved on
        since: after the restore, its log says it is still debiting or
        crediting, whatever the services did for it meanwhile. New transfers
        are held until every saga the copy lacks has ended, so that the
        restore forgets only finished ones (and the run still counts them);
        then every orchestrator stops, the log goes back, and they start again.
        """
        rates = self.config.rates
        loop = asyncio.get_running_loop()
        if self.rollbacks < rates.log_rollbacks:
            self.backups.append(self.log.copy_at(EPOCH_MS + round(loop.time() * 1000)))
        if self.rollbacks >= rates.log_rollbacks or self._rollbacks_rng.random() >= rates.log_rollback:
            return
        now = {record.transaction_id: record for record in await self.log.sagas()}
        backup = next(
            (copy for copy in self.backups if _moved_on_since(copy, now) and not _forgets_a_claim(copy, now)), None
        )
        if backup is None:
            return
        self.log_open.clear()
        deadline = loop.time() + 120
        while not await self._all_ended([tid for tid in now if tid not in backup.sagas]):
            if loop.time() >= deadline:
                # Some saga the copy lacks will not end: restoring would lose it unfinished.
                self.log_open.set()
                return
            await asyncio.sleep(self.config.poll_seconds)
        for process in processes:
            # Crashed before it is woken: a paused process's call to the log
            # (a saga's creation, say) must die with it, not land mid-restore.
            process.crashed.set()
            process.paused.running.set()
        await self.all_down.wait()
        self.all_down.clear()
        current = await self.log.sagas()
        if _forgets_a_claim(backup, {record.transaction_id: record for record in current}):
            # A saga of the copy was claimed while the run waited: no restore this time.
            self.log_open.set()
            return
        erased = [record for record in current if record.transaction_id not in backup.sagas]
        self.forgotten += erased
        for record in erased:
            self.forgotten_histories[record.transaction_id] = await self.log.history(record.transaction_id)
        went_back = sum(1 for tid, saga in backup.sagas.items() if tid not in now or saga.state is not now[tid].state)
        self.log.restore(backup)
        self.rollbacks += 1
        self.backups.clear()
        self.network.record(
            LOG_ROLLBACK,
            f"saga log restored from its copy of {backup.at_ms - EPOCH_MS}ms: {went_back} sagas went back, "
            f"{len(erased)} finished ones forgotten",
        )
        self.log_open.set()

    async def _all_ended(self, transaction_ids: list[str]) -> bool:
        states = await self.log.states(transaction_ids)
        return all(state.is_terminal for state in states.values())

    def _crash_or_pause(self, processes: list[_Process]) -> None:
        process = self._faults.choice(processes)
        if not process.paused.running.is_set() or process.crashed.is_set():
            return
        if self._faults.random() >= self.config.rates.pause:
            process.crashed.set()
            return
        pause_ms = self._faults.randint(self.config.rates.pause_ms.low, self.config.rates.pause_ms.high)
        self.pauses += 1
        self.network.record("pause", f"orchestrator-{process.index} for {pause_ms}ms")
        process.paused.running.clear()
        asyncio.get_running_loop().call_later(pause_ms / 1000, process.paused.running.set)

    async def _transfers(self, orchestrator: Orchestrator, queue: deque[PlannedTransfer]) -> None:
        while queue:
            if not self.log_open.is_set():
                await self.log_open.wait()
                continue
            planned = queue.popleft()
            self.in_flight += 1
            now_ms = EPOCH_MS + round(asyncio.get_running_loop().time() * 1000)
            # A deadline on the virtual clock, as a client states it: each orchestrator reads it on its own clock.
            deadline_ms = None if planned.deadline_after_ms is None else now_ms + planned.deadline_after_ms
            try:
                if planned.submitted:
                    await self._submit_and_wait(planned, now_ms, deadline_ms)
                else:
                    await orchestrator.transfer(planned.source, planned.target, planned.amount, deadline_ms=deadline_ms)
            except Exception as error:
                self._saga_raised(error)
            finally:
                self.in_flight -= 1

    async def _submit_and_wait(self, planned: PlannedTransfer, now_ms: int, deadline_ms: int | None) -> None:
        """Submit the transfer as PENDING, as the transfers service does, and wait until the log says it ended."""
        record = SagaRecord(
            self.new_id(),
            planned.source,
            planned.target,
            planned.amount,
            created_at_ms=now_ms,
            updated_at_ms=now_ms,
            deadline_ms=deadline_ms,
        )
        await self.log.submit(record)
        pause = 0.05
        while True:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            logged = await self.log.get(record.transaction_id)
            # None: a log rollback forgot it once it had ended.
            if logged is None or logged.state.is_terminal:
                return

    async def _operators(self) -> None:
        """Now and then an operator looks at the console: cancels a PENDING saga, retries a COMPENSATING one."""
        rates, rng = self.config.rates, self._operators_rng
        if not (rates.operator_cancel or rates.operator_retry):
            return
        while True:
            await asyncio.sleep(rng.randint(rates.operator_look_ms.low, rates.operator_look_ms.high) / 1000)
            if not self.log_open.is_set():
                # A restore is under way: no one touches the log.
                continue
            if rng.random() < rates.operator_cancel:
                await self._operator_acts(ActionKind.CANCEL, SagaState.PENDING, "the customer called it off")
            if rng.random() < rates.operator_retry:
                await self._operator_acts(ActionKind.RETRY, SagaState.COMPENSATING, "the service is back")

    async def _operator_acts(self, kind: ActionKind, state: SagaState, reason: str) -> None:
        """Pick a saga in ``state`` off the console, think a while, then act on it; a refusal is normal."""
        rates, rng = self.config.rates, self._operators_rng
        shown = await self.log.sagas(state)
        if not shown:
            return
        chosen = rng.choice(shown)
        await asyncio.sleep(rng.randint(rates.operator_think_ms.low, rates.operator_think_ms.high) / 1000)
        at_ms = EPOCH_MS + round(asyncio.get_running_loop().time() * 1000)
        action = OperatorAction(chosen.transaction_id, kind, "operator", reason, at_ms)
        try:
            acted = await self.log.act(action)
        except ActionRefused as refused:
            self.operator_actions[f"{kind.value}_refused"] += 1
            self.network.record("operator", f"{kind.value} refused: {refused.code}", chosen.transaction_id)
            return
        self.operator_actions[kind.value] += 1
        self.network.record("operator", f"{kind.value}: {acted.state.value}", chosen.transaction_id)

    async def _claims(self, orchestrator: Orchestrator, process: _Process) -> None:
        """Each poll, take over the sagas whose leases ran out: a crashed or paused orchestrator's."""
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            for record in await orchestrator.claim(self.config.concurrency):
                process.tasks.add(asyncio.create_task(self._take_over(orchestrator, record)))

    async def _take_over(self, orchestrator: Orchestrator, record: SagaRecord) -> None:
        try:
            await orchestrator.drive(record)
        except ValueError:
            # Its own saga, whose lease lapsed while it was paused: that run
            # stops at its next commit, and this claim's lease runs out.
            pass
        except Exception as error:
            self._saga_raised(error)

    def _watch_balances(self, host: str, transaction_id: str, step: str) -> None:
        """No balance may be negative at any moment, not just at the end.

        A balance overdrawn by a race is often topped up again by later
        credits: only a check after every request sees it.
        """
        for account in self.stores[host].ledger.accounts():
            if account.balance < 0 and (host, account.user_id) not in self.overdrawn:
                at_ms = round(asyncio.get_running_loop().time() * 1000)
                self.overdrawn[(host, account.user_id)] = verify.Violation(
                    "no negative balance",
                    f"{account.user_id}@{service_url(host)} was {account.balance} at {at_ms}ms, "
                    f"right after {step} of {transaction_id}",
                    (transaction_id,),
                )

    def _saga_raised(self, error: Exception) -> None:
        where = traceback.extract_tb(error.__traceback__)[-1]
        self.errors.append(
            verify.Violation(
                "the saga never raises",
                f"{type(error).__name__}: {error} at {where.filename}:{where.lineno}",
            )
        )


def _ignore() -> None:
    """A wake-up the simulated orchestrators do without: they claim once per poll."""
