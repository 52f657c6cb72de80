"""One simulated run: the real saga against real accounts services, on a virtual clock, under a seeded fault plan.

A run draws its accounts and transfers from the seed, starts one accounts
service app per simulated URL, and has ``concurrency`` workers push the
transfers through a real :class:`~saga.Orchestrator` on a
:class:`~saga.MemorySagaLog`. The network between them is a
:class:`~saga.simulation.network.SimulatedNetwork`. When the fault plan
says so, the orchestrator crashes: every saga task is cancelled wherever it
is, and a fresh orchestrator on the same log runs ``recover()`` while the
remaining transfers go on. When the plan crashes an accounts service
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
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp

from saga import verify
from saga.batch import PlannedTransfer
from saga.log import MemorySagaLog
from saga.orchestrator import Orchestrator
from saga.records import Change, SagaRecord
from saga.retry import RetryPolicies
from saga.simulation.clock import run_in_virtual_time
from saga.simulation.faults import CRASH, FaultRates, MillisecondRange, TraceEvent
from saga.simulation.invariants import check_run
from saga.simulation.network import SimulatedNetwork
from saga.simulation.workload import WorkloadShape, draw_workload, seeded_ids, service_url
from saga.states import SagaState
from server import Settings, create_app
from server.ledger import Ledger
from server.stores.memory import MemoryStore

#: Virtual wall-clock time at the start of every run, so that timestamps in
#: the saga log look like real ones and are the same in every run.
EPOCH_MS = 1_700_000_000_000

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

    def command(self) -> str:
        """The one command that reruns exactly this run."""
        return (
            f".venv/bin/python -m saga.simulation --seed {self.seed} --transfers {self.transfers} "
            f"--services {self.services} --concurrency {self.concurrency}"
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

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def states(self) -> Counter[SagaState]:
        return Counter(saga.state for saga in self.sagas)

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


def _rng(config: SimulationConfig, purpose: str) -> random.Random:
    """An independent stream per purpose, so that changing how one part draws leaves the others alone."""
    # A string seed is hashed with SHA-512, not with the per-process hash(): the same in every process.
    return random.Random(f"{config.seed}/{purpose}")


class _SimulatedLog(MemorySagaLog):
    """A memory log whose commits take time, like fsyncs, and that tells the run when a recovery has listed.

    A commit becomes durable partway through its wait: a crash before that
    point loses the change, a crash after it keeps the change although the
    saga never learned so. Either way the saga must not have acted on it.
    """

    def __init__(self, rng: random.Random, commit_ms: MillisecondRange) -> None:
        super().__init__()
        self._rng = rng
        self._commit_ms = commit_ms
        self.listed: asyncio.Event | None = None

    async def commit(self, change: Change) -> None:
        total_ms = self._rng.randint(self._commit_ms.low, self._commit_ms.high)
        durable_after_ms = self._rng.randint(0, total_ms)
        await asyncio.sleep(durable_after_ms / 1000)
        await super().commit(change)
        await asyncio.sleep((total_ms - durable_after_ms) / 1000)

    async def unfinished(self) -> list[SagaRecord]:
        unfinished = await super().unfinished()
        if self.listed is not None:
            self.listed.set()
            self.listed = None
        return unfinished


class _Run:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        rates = config.rates
        self.workload = draw_workload(_rng(config, "workload"), config.services, config.transfers, config.shape)
        #: Each service's store: it outlives the service's crashes, as a database would.
        self.stores = {host: MemoryStore.create(accounts) for host, accounts in self.workload.balances.items()}
        self.restarts: Counter[str] = Counter()
        apps = {host: self._start_service(host) for host in self.stores}
        self.trace: list[TraceEvent] = []
        self.network = SimulatedNetwork(apps, rates, _rng(config, "network"), self.trace)
        self.network.on_delivered = self._watch_balances
        self.network.on_restart = self._restart_service
        self.overdrawn: dict[tuple[str, str], verify.Violation] = {}
        self.log = _SimulatedLog(_rng(config, "log"), rates.log_commit_ms)
        self.new_id = seeded_ids(_rng(config, "ids"))
        self.crashes = 0
        self.errors: list[verify.Violation] = []

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

    def _orchestrator(self) -> Orchestrator:
        loop = asyncio.get_running_loop()
        return Orchestrator(
            self.log,
            policies=self.config.policies,
            # Room for the sagas a recovery resumes on top of the workers' new
            # ones: a new transfer queued behind recoveries is lost unlogged if
            # the orchestrator crashes again, which would only thin the run out.
            concurrency=2 * self.config.concurrency,
            transport=self.network,
            new_id=self.new_id,
            rng=_rng(self.config, f"orchestrator/{self.crashes}"),
            now_ms=lambda: EPOCH_MS + round(loop.time() * 1000),
        )

    async def run(self) -> SimulationResult:
        opening = {service_url(host): dict(accounts) for host, accounts in self.workload.balances.items()}
        queue = deque(self.workload.transfers)
        await self._drive(queue)
        records = await self.log.sagas()
        violations = self.errors + list(self.overdrawn.values()) + check_run(opening, self.ledgers, records)
        await self.network.drain()
        # Late duplicates may land long after every saga ended: they must change nothing.
        records = await self.log.sagas()
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
        )

    async def _drive(self, queue: deque[PlannedTransfer]) -> None:
        """Run every transfer; crash and recover whenever the plan says; end when every saga is terminal."""
        recovering = False
        rounds_after_the_last_transfer = 0
        while True:
            ending = await self._incarnation(queue, recovering=recovering)
            if ending == "out of time":
                self.errors.append(
                    verify.Violation(
                        "the run finishes",
                        f"sagas still running after {self.config.virtual_time_limit:g} virtual seconds",
                    )
                )
                return
            recovering = True
            if ending == "crashed":
                continue
            if not await self.log.unfinished():
                return
            # A compensation that could not finish leaves its saga for the next recovery.
            rounds_after_the_last_transfer += 1
            if rounds_after_the_last_transfer > FINAL_RECOVERY_ROUNDS:
                return

    async def _incarnation(self, queue: deque[PlannedTransfer], *, recovering: bool) -> str:
        """One orchestrator's life: until the queue is done, it crashes, or the run is out of time."""
        loop = asyncio.get_running_loop()
        orchestrator = self._orchestrator()
        crashed = asyncio.Event()
        self.network.on_crash = crashed.set
        recovery_listed = asyncio.Event()
        work = []
        if recovering:
            self.network.record("recover")
            self.log.listed = recovery_listed
            work.append(asyncio.create_task(self._recover(orchestrator)))
        else:
            recovery_listed.set()
        work += [
            asyncio.create_task(self._worker(orchestrator, queue, recovery_listed))
            for _ in range(self.config.concurrency)
        ]
        crash = asyncio.create_task(crashed.wait())
        waiting: set[asyncio.Task[Any]] = {*work, crash}
        while not crash.done() and waiting != {crash} and loop.time() < self.config.virtual_time_limit:
            await asyncio.wait(
                waiting, timeout=self.config.virtual_time_limit - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            waiting = {task for task in waiting if not task.done()}
        self.network.on_crash = None
        crash.cancel()
        if all(task.done() for task in work):
            return "finished"
        # The orchestrator's process dies: every saga stops wherever it is.
        for task in work:
            task.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        if loop.time() >= self.config.virtual_time_limit:
            return "out of time"
        self.crashes += 1
        self.network.record("crash", f"{sum(1 for task in work if task.cancelled())} tasks cancelled")
        return "crashed"

    async def _worker(
        self, orchestrator: Orchestrator, queue: deque[PlannedTransfer], recovery_listed: asyncio.Event
    ) -> None:
        # recover() resumes every unfinished saga in the log, including ones
        # this orchestrator is running: new sagas must wait until recovery
        # has listed what it will resume, or a saga would run twice at once.
        await recovery_listed.wait()
        while queue:
            planned = queue.popleft()
            try:
                await orchestrator.transfer(planned.source, planned.target, planned.amount)
            except Exception as error:
                self._saga_raised(error)

    async def _recover(self, orchestrator: Orchestrator) -> None:
        try:
            await orchestrator.recover()
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
